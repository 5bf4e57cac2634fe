"""The archive as an extra output of each flush: WAL records -> `events_raw` rows.

Every message the worker accepted is archived (heartbeats excepted: they
carry no events; a message refused as a whole or dropped as a duplicate is
not), with its records sanitized (API keys hashed,
pipelines.archive.sanitize) and re-encoded as msgpack. With notice signatures
verified, a notice that fails is left out: the worker rejected it, and the
archive's copy could not be checked again by `rebuild` or the worker a `replay`
feeds (a KeySpaceUpdateNotification's signature is blanked with its keys). The rows are written in
the same flush and under the same token as the rollups, so the archive holds
each logged message exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec
import numpy as np
import pyarrow as pa

from pipelines.archive.sanitize import Sanitizer
from pipelines.containers import container_limit, msgpack_buildable
from pipelines.errors import DECODE_ERRORS
from pipelines.firehose.protocol import (
    ENCODING_JSON,
    ENCODINGS,
    PROTOCOL_VERSION,
    Envelope,
    NoticeRecord,
    TopicKind,
    parse_topic,
)
from pipelines.firehose.timestamps import INVALID_NS, keep_extensions, records_one_by_one, to_ns_array
from pipelines.keys import KeyHasher
from pipelines.security.notices import NoticeVerifier
from pipelines.wal.format import WalRecord
from sinks.clickhouse.archive import ARCHIVE_SCHEMA, ARCHIVE_TABLE, EventsArchive
from sinks.clickhouse.sink import ClickHouseSink

_MAX_SECONDS: Final = 2**32 - 1


class EventsArchiveOutput:
    name = ARCHIVE_TABLE

    def __init__(
        self,
        sink: ClickHouseSink,
        hasher: KeyHasher,
        *,
        ttl_days: int = 30,
        notices: NoticeVerifier | None = None,
    ) -> None:
        self.archive = EventsArchive(sink, ttl_days)
        self.sanitizer = Sanitizer(hasher)
        self.notices = notices
        self._envelope = msgspec.msgpack.Decoder(Envelope)
        self._encoder = msgspec.msgpack.Encoder()
        self.skipped = 0

    def setup(self) -> None:
        self.archive.setup()

    def write(self, table: pa.Table, token: str) -> int:
        return self.archive.write(table, token)

    def build(self, records: Sequence[WalRecord], accepted: Sequence[bool]) -> pa.Table:
        """The rows of the messages the worker accepted: one it refused as a whole (a count that
        lies, a bad node, a duplicate seq) is not archived, so `rebuild` and `replay` cannot count
        it later (they see only the archive, not the original it duplicated)."""
        columns: dict[str, list[Any]] = {name: [] for name in ARCHIVE_SCHEMA.names}
        for record, taken in zip(records, accepted, strict=True):
            if not taken:
                self.skipped += 1
                continue
            row = self.row(record)
            if row is None:
                continue
            for name, value in zip(ARCHIVE_SCHEMA.names, row, strict=True):
                columns[name].append(value)
        return pa.table(columns, schema=ARCHIVE_SCHEMA)

    def row(self, record: WalRecord) -> tuple[Any, ...] | None:
        """The archive row of one logged message, or None if it is not archived."""
        decoded = self._decode(record.frames)
        if decoded is None:
            return None
        topic, kind, env, payload = decoded
        if kind is TopicKind.NOTICE and self.notices is not None:
            payload = [r for r in payload if not _forged(self.notices, r)]
        records = self.sanitizer.records(kind, payload)
        first, last = _event_span(records, record.received_ns)
        return (
            record.received_ns,
            env.node,
            env.boot,
            env.seq,
            topic,
            len(records),
            first,
            last,
            self._encoder.encode(records),
        )

    def _decode(self, frames: list[bytes]) -> tuple[str, TopicKind, Envelope, list[Any]] | None:
        if len(frames) != 3:
            return None
        try:
            topic = frames[0].decode("ascii")
            env = self._envelope.decode(frames[1])
            if env.enc not in ENCODINGS:
                return None
            if not _buildable(frames[2], env.enc):
                self.skipped += 1
                return None
            payload = self._payload(frames[2], env.enc)
        except DECODE_ERRORS:  # deep nesting included: the ingestor rejected it, the archive skips it
            self.skipped += 1
            return None
        parsed = parse_topic(topic)
        valid = env.v == PROTOCOL_VERSION and bool(env.node) and env.seq >= 0 and env.boot >= 0
        if parsed is None or not valid or not isinstance(payload, list):
            self.skipped += 1
            return None
        if parsed[0] is TopicKind.HEARTBEAT:
            return None
        return topic, parsed[0], env, payload

    @staticmethod
    def _payload(payload: bytes, enc: str) -> Any:
        if enc == ENCODING_JSON:
            return msgspec.json.decode(payload)
        try:
            records = msgspec.msgpack.decode(payload)
        except DECODE_ERRORS:
            # one record msgspec cannot build (a malformed timestamp extension) failed the whole
            # decode; the worker rejects that record alone and counts the others
            records = records_one_by_one(payload)
            if records is None:
                raise
            return records
        if isinstance(records, list):
            keep_extensions(payload, records)
        return records


def _buildable(payload: bytes, enc: str) -> bool:
    """Whether the payload holds few enough maps and lists to be built whole (pipelines.containers),
    which the archive does, and sanitizes in Python, for every record, its fields the ingestor skips
    included: a valid record with an unknown field of 16 M empty maps took a worker 2.8 GB and 16 s
    in the flush."""
    if enc == ENCODING_JSON:  # an upper bound: braces inside strings are counted too
        return payload.count(b"{") + payload.count(b"[") <= container_limit(len(payload))
    return msgpack_buildable(payload)


def _forged(verifier: NoticeVerifier, record: Any) -> bool:
    """A notice the worker rejected for its signature (one that is not a notice at all it rejected
    anyway, and so does anything that reads the archive)."""
    try:
        notice = msgspec.convert(record, NoticeRecord)
    except msgspec.ValidationError:
        return False
    return verifier.verify(notice) is not None


def _event_span(records: list[dict[str, Any]], received_ns: int) -> tuple[int, int]:
    """Earliest and latest record time in seconds (the receive time when none is valid)."""
    stamps = to_ns_array([r.get("timestamp") for r in records])
    stamps = stamps[stamps != INVALID_NS]
    if not stamps.size:
        second = received_ns // 1_000_000_000
        return second, second
    first = int(np.min(stamps)) // 1_000_000_000
    last = -(-int(np.max(stamps)) // 1_000_000_000)
    return min(first, _MAX_SECONDS), min(last, _MAX_SECONDS)
