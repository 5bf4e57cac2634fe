"""The raw-event archive: table `events_raw`, one row per accepted firehose message.

Written by the worker in the same flush (and under the same deduplication
token) as the rollups, so it holds each accepted message exactly once. API
keys are hashed before a row is built (pipelines.archive.sanitize); the table
never sees a raw key. Rows expire after the configured TTL.

    received      the worker's receive time            DateTime64(9, 'UTC')
    node, boot, seq, topic                             from the envelope
    records       records in the payload               UInt32
    first_event,  the earliest and latest record time  DateTime('UTC')
    last_event    (what `rebuild` selects windows by)
    payload       the records, msgpack, keys hashed    String, ZSTD
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Final

import pyarrow as pa
from clickhouse_connect.driver.exceptions import ClickHouseError

from sinks.clickhouse.ddl import DEDUP_WINDOW
from sinks.clickhouse.sink import ClickHouseSink, translate
from sinks.errors import SinkRejectedError

ARCHIVE_TABLE: Final = "events_raw"
# ClickHouse's UNKNOWN_TABLE and UNKNOWN_DATABASE: reading an archive no worker ever wrote.
_MISSING_CODES: Final = frozenset({60, 81})


class ArchiveMissingError(SinkRejectedError):
    """The archive table does not exist: no worker ran with --archive on this database."""


ARCHIVE_SCHEMA: Final = pa.schema(
    [
        ("received", pa.timestamp("ns", tz="UTC")),
        ("node", pa.string()),
        ("boot", pa.uint64()),
        ("seq", pa.uint64()),
        ("topic", pa.string()),
        ("records", pa.uint32()),
        ("first_event", pa.uint32()),
        ("last_event", pa.uint32()),
        ("payload", pa.binary()),
    ]
)
_COLUMNS: Final = ", ".join(ARCHIVE_SCHEMA.names)


def archive_statements(database: str, ttl_days: int) -> list[str]:
    table = f"{database}.{ARCHIVE_TABLE}"
    ttl = f"toDateTime(received) + INTERVAL {int(ttl_days)} DAY"
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        "    received DateTime64(9, 'UTC'),\n"
        "    node String,\n"
        "    boot UInt64,\n"
        "    seq UInt64,\n"
        "    topic LowCardinality(String),\n"
        "    records UInt32,\n"
        "    first_event DateTime('UTC'),\n"
        "    last_event DateTime('UTC'),\n"
        "    payload String CODEC(ZSTD(3)),\n"
        "    INDEX event_span (first_event, last_event) TYPE minmax GRANULARITY 4\n"
        ")\nENGINE = MergeTree\nPARTITION BY toYYYYMMDD(received)\nORDER BY (received, node, boot, seq)"
        f"\nTTL {ttl}\nSETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}",
        f"ALTER TABLE {table} MODIFY TTL {ttl}",
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class ArchivedMessage:
    received_ns: int
    node: str
    boot: int
    seq: int
    topic: str
    records: int
    payload: bytes


class EventsArchive:
    """Writes and reads `events_raw` through a sink's client."""

    def __init__(self, sink: ClickHouseSink, ttl_days: int = 30) -> None:
        self.sink = sink
        self.ttl_days = ttl_days
        self.table = f"{sink.database}.{ARCHIVE_TABLE}"

    def setup(self) -> None:
        for statement in archive_statements(self.sink.database, self.ttl_days):
            self._command(statement)

    def write(self, rows: pa.Table, token: str) -> int:
        if rows.num_rows == 0:
            return 0
        settings = {"insert_deduplicate": 1, "insert_deduplication_token": f"{token}/{ARCHIVE_TABLE}"}
        try:
            self.sink.client.insert_arrow(self.table, rows, settings=settings)
        except (ClickHouseError, OSError) as exc:
            raise translate(exc, f"insert into {self.table}", self.table) from exc
        return int(rows.num_rows)

    def span(self) -> tuple[int, int] | None:
        """(first, last) receive time in the archive, unix ns; None when it is empty."""
        rows = self._query(
            f"SELECT count(), toUnixTimestamp64Nano(min(received)), "
            f"toUnixTimestamp64Nano(max(received)) FROM {self.table}"
        )
        count, first, last = rows[0]
        return None if count == 0 else (int(first), int(last))

    def messages(self, where: str, *, chunk: int = 5_000) -> Iterator[list[ArchivedMessage]]:
        """Archived messages matching `where`, in receive order.

        Read in chunks by keyset pagination; a message stored twice (two workers
        on one firehose) is returned once.
        """
        after = "(toDateTime64(0, 9, 'UTC'), '', 0, 0)"
        while True:
            sql = (
                f"SELECT toUnixTimestamp64Nano(received), node, boot, seq, topic, records, payload "
                f"FROM {self.table} "
                f"WHERE ({where}) AND (received, node, boot, seq) > {after} "
                f"ORDER BY received, node, boot, seq LIMIT 1 BY node, boot, seq LIMIT {int(chunk)}"
            )
            found = self._query(sql, column_formats={"payload": "bytes"})
            rows = [
                ArchivedMessage(int(r[0]), r[1], int(r[2]), int(r[3]), r[4], int(r[5]), _as_bytes(r[6]))
                for r in found
            ]
            if not rows:
                return
            yield rows
            last = rows[-1]
            after = (
                f"(fromUnixTimestamp64Nano({last.received_ns}, 'UTC'), {_quote(last.node)}, "
                f"{last.boot}, {last.seq})"
            )

    def _command(self, sql: str) -> None:
        try:
            self.sink.client.command(sql)
        except (ClickHouseError, OSError) as exc:
            raise translate(exc, sql.splitlines()[0]) from exc

    def _query(self, sql: str, **options: Any) -> list[tuple[Any, ...]]:
        try:
            return list(self.sink.client.query(sql, **options).result_rows)
        except (ClickHouseError, OSError) as exc:
            error = translate(exc, "archive query")
            if error.code in _MISSING_CODES:
                # "Unknown table events_raw" says what broke, not what to do about it.
                msg = (
                    f"archive not enabled: start the worker with --archive (there is no {self.table} "
                    f"at {self.sink.target.describe()})"
                )
                raise ArchiveMissingError(msg, table=self.table, code=error.code) from exc
            raise error from exc

    def count(self, where: str) -> int:
        """Archived rows matching `where` (a message stored twice counts twice): a progress total."""
        return int(self._query(f"SELECT count() FROM {self.table} WHERE {where}")[0][0])


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
