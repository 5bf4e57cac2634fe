"""The worker's stages one at a time, in this process, on one core.

- decode: MessageDecoder.decode (envelope, topic, payload into record structs) by
  encoding and records per message;
- aggregate: BatchBuilder.build + rollups.compute (windowing, columns, group-bys)
  on one flush's worth of records, by the number of distinct rollup keys
  ((org, api) pairs) and distinct API keys;
- sink: ClickHouseSink.write of traffic partial rows into embedded ClickHouse,
  by rows per insert;
- log: WalWriter.append + commit (the write-ahead log, interval fsync, as the
  appender thread groups messages), by records per message.

Each figure is the best of `repeat` timings (the machine is shared: the best is
the least disturbed).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench.workload import MessagePool, WorkloadShape
from pipelines.firehose.codec import MessageDecoder
from pipelines.firehose.protocol import AnalyticsRecord, Envelope, EventRecord, Latency, TopicKind
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from pipelines.wal.appender import BATCH_MESSAGES
from pipelines.wal.writer import WalWriter
from pipelines.windows.batch import BatchBuilder, PendingMessages
from pipelines.windows.tumbling import TumblingWindows
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def decode(encoding: str, records_per_message: int, records: int, repeat: int) -> dict[str, Any]:
    pool = MessagePool(WorkloadShape(records_per_message, encoding=encoding, pool_records=records))
    pool.stamp_all(time.time_ns())
    encode = msgspec.msgpack.Encoder().encode
    frames = [
        [topic, encode(Envelope(1, "n", 1, i, 0, records_per_message, encoding)), bytes(view)]
        for i, (topic, view) in enumerate(zip(pool.topics, pool.views, strict=True))
    ]
    decoder = MessageDecoder()
    seconds = best_seconds(lambda: [decoder.decode(f) for f in frames], repeat)
    return {
        "stage": "decode",
        "encoding": encoding,
        "records_per_message": records_per_message,
        "records_per_s": pool.records / seconds,
    }


def _pending(records: int, group_keys: int, api_keys: int, seed: int = 3) -> PendingMessages:
    """One flush of analytics records (5 % of them also rate-limit events), 100 per message."""
    rng = np.random.default_rng(seed)
    now = time.time_ns()
    api = rng.integers(0, group_keys, records)
    code = np.where(rng.random(records) < 0.05, 429, 200)
    latency = rng.lognormal(3.5, 0.8, records).astype(np.int64)
    key = rng.integers(0, api_keys, records)
    pending = PendingMessages()
    analytics = [
        AnalyticsRecord(now - i, f"org{a % 20:02d}", f"api{a:07d}", int(c), Latency(int(lat)))
        for i, (a, c, lat) in enumerate(zip(api.tolist(), code.tolist(), latency.tolist(), strict=True))
    ]
    events = [
        EventRecord("RatelimitExceeded", now, f"org{a % 20:02d}", f"api{a:07d}", f"key{k:08d}")
        for a, c, k in zip(api.tolist(), code.tolist(), key.tolist(), strict=True)
        if c == 429
    ]
    for kind, batch in ((TopicKind.ANALYTICS, analytics), (TopicKind.EVENT, events)):
        for start in range(0, len(batch), 100):
            chunk = batch[start : start + 100]
            pending.add(node="n", boot=1, sent_ns=now, received_ns=now, lost=0, kind=kind, records=chunk)
    return pending


def aggregate(records: int, group_keys: int, api_keys: int, repeat: int) -> dict[str, Any]:
    pending = _pending(records, group_keys, api_keys)
    total = sum(pending.record_count)

    def run() -> None:
        builder = BatchBuilder(TumblingWindows(), KeyHasher(), 86_400 * 10**9)
        compute(builder.build(pending))

    seconds = best_seconds(run, repeat)
    return {
        "stage": "aggregate",
        "records": total,
        "group_keys": group_keys,
        "api_keys": api_keys,
        "records_per_s": total / seconds,
    }


def sink(rows: int, inserts: int) -> dict[str, Any]:
    """Rows/s of traffic partials (distinct keys, so each record is a row) into embedded ClickHouse."""
    pending = _pending(rows, rows, 1000)
    builder = BatchBuilder(TumblingWindows(), KeyHasher(), 86_400 * 10**9)
    partial = {"traffic": compute(builder.build(pending))["traffic"]}
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        target = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=f"chdb://{Path(tmp) / 'ch'}"))
        try:
            target.setup()
            target.write(partial, "warmup")
            started = time.perf_counter()
            for i in range(inserts):
                target.write(partial, f"t{i}")
            seconds = time.perf_counter() - started
        finally:
            target.close()
    written = partial["traffic"].num_rows * inserts
    return {"stage": "sink", "rows_per_insert": partial["traffic"].num_rows, "rows_per_s": written / seconds}


def log_append(records_per_message: int, records: int, repeat: int) -> dict[str, Any]:
    """Records/s the write-ahead log takes (checksum, write, interval fsync) on one core."""
    pool = MessagePool(WorkloadShape(records_per_message, pool_records=records))
    encode = msgspec.msgpack.Encoder().encode
    frames = [
        [topic, encode(Envelope(1, "n", 1, i, 0, records_per_message, "msgpack")), bytes(view)]
        for i, (topic, view) in enumerate(zip(pool.topics, pool.views, strict=True))
    ]
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        counter = iter(range(repeat))

        def run() -> None:
            writer = WalWriter(Path(tmp) / f"wal{next(counter)}", max_bytes=64 << 30)
            writer.open(0)
            for index, message in enumerate(frames):
                writer.append(message, index)
                if index % BATCH_MESSAGES == BATCH_MESSAGES - 1:
                    writer.commit()
            writer.commit()
            writer.close()

        seconds = best_seconds(run, repeat)
    rate = pool.records / seconds
    return {"stage": "log", "records_per_message": records_per_message, "records_per_s": rate}
