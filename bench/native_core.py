"""The native core against the Python path it replaces, per record and per message (issue #16).

    python -m bench.native_core

Times, in CPU time of this process, on a 100-record message of 29-field Tyk records:
the payload decoded into the columns the rollups read (the reference: msgspec structs,
timestamps normalised, columns extracted as BatchBuilder does; the native decoder), and
the WAL checksum of the whole message (zlib's CRC-32 in GIL-keeping slices; native CRC-32C);
the WAL framing of a 1-record message (headers packed field by field around one checksum
call, as the writer did; the native whole-record build); and the decode of a 1-record message
(its envelope by msgspec and the codec's checks, then the payload natively, as the worker did;
envelope read natively), alone and inside a worker's Ingestor; and a worker's
Ingestor taking messages one per call against the appender's hand-overs of many (envelopes read in
one native call, the payloads of the accepted ones decoded in another); and the appender thread
logging 1-record messages in those hand-overs, the flusher's tap decoding them into its live range
(WalWriter.append per message against append_many: a run of small records framed in one call).
"""

from __future__ import annotations

import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from pipelines._native import FlushColumns, MessageColumns, record_crc
from pipelines.firehose.analytics_columns import FlushAnalytics
from pipelines.firehose.codec import DecodedMessage, MessageDecoder
from pipelines.firehose.timestamps import to_ns_array
from pipelines.ingest import Ingestor, ReplayClock
from pipelines.wal.appender import BATCH_MESSAGES
from pipelines.wal.format import (
    BODY_HEADER,
    FRAME_LENGTH,
    RECORD_HEADER,
    LoggedRecords,
    crc32,
    encode_record_parts,
)
from pipelines.wal.reader import chain_crcs
from pipelines.wal.writer import FsyncPolicy, WalWriter

RECORDS = 100
CALLS = 3_000
INGESTED = 50_000


def record(i: int, now: int) -> dict[str, Any]:
    return {
        "method": "GET", "host": "api.example.com", "path": f"/v1/items/{i}", "raw_path": f"/v1/items/{i}",
        "content_length": 123, "user_agent": "curl/8", "day": 4, "month": 12, "year": 2026, "hour": 19,
        "response_code": (200, 200, 404, 500)[i % 4], "api_key": "k" * 32, "timestamp": now,
        "api_version": "v1", "api_name": "items", "api_id": f"api{i % 20}", "org_id": f"org{i % 3}",
        "oauth_id": "", "request_time": 12, "ip_address": "10.0.0.1", "geo": {"country": {"iso_code": "DE"}},
        "network": {}, "latency": {"total": 12, "upstream": 10, "gateway": 2}, "tags": ["a", "b"],
        "alias": "", "track_path": False, "expireAt": now, "original_path": "/v1", "listen_path": "/v1",
    }  # fmt: skip


def cpu_per_call(work: Callable[[], object], times: int = 1) -> float:
    calls = CALLS * times
    started = time.process_time()
    for _ in range(calls):
        work()
    return (time.process_time() - started) / calls


def main() -> None:
    now = time.time_ns()
    payload = msgpack.packb([record(i, now) for i in range(RECORDS)])
    envelope = msgpack.packb(
        {"v": 1, "node": "n", "boot": 1, "seq": 1, "sent": 1, "count": RECORDS, "enc": "msgpack"}
    )
    frames = [b"tyk.analytics", envelope, payload]
    decoder = MessageDecoder(analytics_columns=False)  # the reference: structs, then columns

    def reference() -> object:
        message = decoder.decode(frames)
        assert isinstance(message, DecodedMessage)
        r = message.structs
        return (
            to_ns_array([x.timestamp for x in r]),
            [x.org_id for x in r],
            [x.api_id for x in r],
            np.array([x.response_code for x in r], np.int64),
            np.array([x.latency.total for x in r], np.int64),
        )

    flush = FlushColumns()

    def native() -> object:
        # what a worker does per message: decode, then append to the flush's columns
        columns = MessageColumns.decode(payload, RECORDS)
        assert columns is not None
        flush.append(columns)
        return columns

    head = BODY_HEADER.pack(0, now, len(frames))
    us = 1e6 / RECORDS
    print(f"message: {len(payload):,} bytes of payload, {RECORDS} records")
    python_s, native_decode_s = cpu_per_call(reference), cpu_per_call(native)
    print(f"decode to columns, us/record: python {python_s * us:.3f}  native {native_decode_s * us:.3f}")
    started = time.process_time()
    analytics = FlushAnalytics.of(flush)
    ids = analytics.org_id(), analytics.api_id()
    flush_s = time.process_time() - started
    per_record = flush_s * 1e6 / len(flush)
    print(f"the flush's columns to numpy and polars (once per flush), us/record: {per_record:.3f}")
    assert len(ids[0]) == len(flush) == CALLS * RECORDS
    zlib_s = cpu_per_call(lambda: crc32(frames[2], zlib.crc32(frames[1], zlib.crc32(frames[0]))))
    native_s = cpu_per_call(lambda: record_crc(head, frames))
    print(f"WAL checksum, us/message: zlib crc32 {zlib_s * 1e6:.2f}  native crc32c {native_s * 1e6:.2f}")
    single = [b"tyk.analytics", envelope, msgpack.packb([record(0, now)])]

    def python_framing() -> object:
        head = BODY_HEADER.pack(0, now, len(single))
        parts, size = [b"", head], len(head)
        for frame in single:
            length = FRAME_LENGTH.pack(len(frame))
            parts += (length, frame)
            size += len(length) + len(frame)
        parts[0] = RECORD_HEADER.pack(size, record_crc(head, single))
        return parts

    python_s = cpu_per_call(python_framing)
    native_s = cpu_per_call(lambda: encode_record_parts(0, now, single))
    print(
        f"WAL framing, 1-record message, us/message: python {python_s * 1e6:.2f}  native {native_s * 1e6:.2f}"
    )
    envelope_fields = {"v": 1, "node": "n", "boot": 1, "seq": 1, "sent": 1, "enc": "msgpack"}
    single[1] = msgpack.packb({**envelope_fields, "count": 1})
    before, worker = MessageDecoder(native_envelope=False), MessageDecoder()

    def envelope_in_python() -> DecodedMessage:
        message = before.decode(single)
        assert isinstance(message, DecodedMessage)
        return message

    def envelope_read_natively() -> DecodedMessage:
        message = worker.decode(single)
        assert isinstance(message, DecodedMessage)
        return message

    assert envelope_in_python().envelope == envelope_read_natively().envelope
    # sub-microsecond differences: the least of seven alternating rounds of ten times the calls
    rounds = [
        (cpu_per_call(envelope_in_python, 10), cpu_per_call(envelope_read_natively, 10)) for _ in range(7)
    ]
    python_s, native_s = (min(times) for times in zip(*rounds, strict=True))
    print(
        f"decode, 1-record message, us/message: envelope in python {python_s * 1e6:.2f}  "
        f"envelope read natively {native_s * 1e6:.2f}"
    )
    stream = [
        [b"tyk.analytics", msgpack.packb({**envelope_fields, "seq": seq, "count": 1}), single[2]]
        for seq in range(INGESTED)
    ]

    def ingested(decoder: MessageDecoder) -> float:
        """CPU per message of a worker's Ingestor taking the stream, then building its batch."""
        ingestor = Ingestor()
        ingestor.decoder = decoder
        started = time.process_time()
        for message in stream:
            ingestor.ingest(message)
        assert ingestor.take().analytics.height == INGESTED
        return (time.process_time() - started) / INGESTED

    rounds = [(ingested(before), ingested(worker)) for _ in range(5)]
    python_s, native_s = (min(times) for times in zip(*rounds, strict=True))
    print(
        f"Ingestor ingest + take, 1-record messages, us/message: envelope in python {python_s * 1e6:.2f}  "
        f"envelope read natively {native_s * 1e6:.2f}"
    )

    for records in (1, RECORDS):
        one_by_one, handed_over = hand_overs(now, records)
        print(
            f"Ingestor ingest_many + take, {records}-record messages, us/record: one message per call "
            f"{one_by_one * 1e6 / records:.3f}  {BATCH_MESSAGES} per call {handed_over * 1e6 / records:.3f}"
        )
    one_by_one, handed_over = logged(now)
    print(
        f"WAL append + commit + tap, 1-record messages in hand-overs of {BATCH_MESSAGES}, us/message: "
        f"append per message {one_by_one * 1e6:.2f}  append_many {handed_over * 1e6:.2f}"
    )


def hand_overs(now: int, records: int) -> tuple[float, float]:
    """CPU per message of a worker's Ingestor taking a stream one message per call, and in the
    appender's hand-overs (ingest_many: envelopes in one native call, payloads in another);
    the least of five alternating rounds each."""
    envelope = {"v": 1, "node": "n", "boot": 1, "sent": 1, "enc": "msgpack", "count": records}
    payload = msgpack.packb([record(i, now) for i in range(records)])
    messages = INGESTED // records
    stream = [[b"tyk.analytics", msgpack.packb({**envelope, "seq": seq}), payload] for seq in range(messages)]

    def ingested(per_call: int) -> float:
        ingestor = Ingestor()
        started = time.process_time()
        for at in range(0, messages, per_call):
            part = stream[at : at + per_call]
            ingestor.ingest_many(part, [now] * len(part))
        assert ingestor.take().analytics.height == messages * records
        return (time.process_time() - started) / messages

    rounds = [(ingested(1), ingested(BATCH_MESSAGES)) for _ in range(5)]
    one, many = (min(times) for times in zip(*rounds, strict=True))
    return one, many


def logged(now: int) -> tuple[float, float]:
    """CPU per message of the appender thread: a hand-over logged (fsync never) and decoded by the
    tap into a live range, as a caught-up worker does; the least of five alternating rounds each."""
    envelope = {"v": 1, "node": "n", "boot": 1, "sent": 1, "enc": "msgpack", "count": 1}
    payload = msgpack.packb([record(0, now)])
    stream = [[b"tyk.analytics", msgpack.packb({**envelope, "seq": seq}), payload] for seq in range(INGESTED)]

    def appended(per_message: bool) -> float:
        with tempfile.TemporaryDirectory() as directory:
            writer = WalWriter(Path(directory), fsync=FsyncPolicy.NEVER)
            writer.open(0)
            ingestor = Ingestor(clock=ReplayClock())
            chain = [0]

            def tap(records: LoggedRecords) -> None:
                # what the flusher's live range does with a write (RangePlanner.logged)
                ingestor.ingest_many(records.frames, records.received_ns)
                chain[0] = chain_crcs(chain[0], records.crcs)

            writer.tap = tap
            started = time.process_time()
            for at in range(0, INGESTED, BATCH_MESSAGES):
                batch = stream[at : at + BATCH_MESSAGES]
                if per_message:
                    for message in batch:
                        writer.append(message, now)
                else:
                    writer.append_many(batch, [now] * len(batch))
                writer.commit()
            assert ingestor.take().analytics.height == INGESTED
            spent = time.process_time() - started
            writer.close()
        return spent / INGESTED

    rounds = [(appended(True), appended(False)) for _ in range(5)]
    one, many = (min(times) for times in zip(*rounds, strict=True))
    return one, many


if __name__ == "__main__":
    main()
