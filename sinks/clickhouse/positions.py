"""Kafka source positions kept in ClickHouse, next to the rollups they produced.

The Faust workers get exactly-once at the sink, without Kafka transactions:
every flush covers an exact offset range of one partition, its rollup
inserts carry deduplication tokens derived from that range, and the range
is recorded here *before* the rollups are written (an intent). A worker that
is assigned a partition reads the latest intent and first redoes exactly that
range (same records, same tokens: whatever part of it had landed is dropped
by ClickHouse's deduplication, the rest lands), then goes on after it. So
ClickHouse, not Kafka's committed offset, says where a partition resumes.

Each row also carries the per-publisher sequence state *before* the range
(node, boot, last seq), so the redone flush counts the same gaps and
duplicates as the first attempt. Rows are ordered by `claim` (bumped by each
new owner of a partition) and then by offset; a worker that finds a newer
claim than its own has lost the partition and stops writing to it.

    kafka_positions   ReplacingMergeTree(version), ORDER BY (topic, partition)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, Final

from clickhouse_connect.driver.exceptions import ClickHouseError

from sinks.clickhouse.ddl import POSITIONS_TABLE as TABLE
from sinks.clickhouse.sink import translate

_COLUMNS: Final = (
    "topic",
    "partition",
    "claim",
    "first_offset",
    "last_offset",
    "seq_nodes",
    "seq_boots",
    "seq_last",
    "seq_run_lows",
    "seq_run_highs",
    "owner",
    "written_at",
)


@dataclasses.dataclass(frozen=True, slots=True)
class SequenceState:
    """Last sequence number per (node, boot), as parallel tuples (sinks never imports pipelines);
    `run_lows`/`run_highs`: every run of seqs seen of each, so a restored tracker drops exactly
    the duplicates the live one did (empty in rows written before: only `last_seqs` was seen)."""

    nodes: tuple[str, ...] = ()
    boots: tuple[int, ...] = ()
    last_seqs: tuple[int, ...] = ()
    run_lows: tuple[tuple[int, ...], ...] = ()
    run_highs: tuple[tuple[int, ...], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Position:
    """One flush of one partition: offsets first..last, and the sequence state before them.

    `last_offset < first_offset` is an empty range (a fresh partition, or a
    claim whose predecessor had not flushed yet).
    """

    topic: str
    partition: int
    claim: int
    first_offset: int
    last_offset: int
    sequences_before: SequenceState
    owner: str

    @property
    def token(self) -> str:
        """Identifies the flush's content: the same range always gives the same token."""
        return f"kafka/{self.topic}/{self.partition}/{self.first_offset}-{self.last_offset}"

    @property
    def is_empty(self) -> bool:
        return self.last_offset < self.first_offset


class PositionStore:
    """Reads and writes positions with the caller's clickhouse-connect client (one thread at a time).

    `client` is called for the client on every use, so a client the caller
    reopens after an outage (ClickHouseSink.client) is picked up.
    """

    def __init__(self, client: Callable[[], Any], database: str, *, cluster: bool = False) -> None:
        self.client = client
        self.table = f"{database}.{TABLE}"
        # On a replicated cluster a reader must see the latest position whichever replica it asks.
        self.write_settings: dict[str, Any] = {"insert_quorum": "auto"} if cluster else {}
        self.read_settings: dict[str, Any] = {"select_sequential_consistency": 1} if cluster else {}

    def latest(self, topic: str, partition: int) -> Position | None:
        sql = (
            "SELECT claim, first_offset, last_offset, seq_nodes, seq_boots, seq_last, seq_run_lows, "
            "seq_run_highs, owner "
            f"FROM {self.table} WHERE topic = %(topic)s AND partition = %(partition)s "
            "ORDER BY claim DESC, last_offset DESC, written_at DESC LIMIT 1"
        )
        rows = self._query(sql, {"topic": topic, "partition": partition})
        if not rows:
            return None
        claim, first, last, nodes, boots, seqs, lows, highs, owner = rows[0]
        state = SequenceState(
            tuple(nodes),
            tuple(int(b) for b in boots),
            tuple(int(s) for s in seqs),
            tuple(tuple(int(v) for v in run) for run in lows),
            tuple(tuple(int(v) for v in run) for run in highs),
        )
        return Position(topic, partition, int(claim), int(first), int(last), state, owner)

    def claim(self, topic: str, partition: int, owner: str, start_offset: int = 0) -> Position:
        """Take a partition over: the latest intent under a new claim number (what to redo first)."""
        latest = self.latest(topic, partition)
        if latest is None:
            position = Position(topic, partition, 1, start_offset, start_offset - 1, SequenceState(), owner)
        else:
            position = dataclasses.replace(latest, claim=latest.claim + 1, owner=owner)
        self.record(position)
        return position

    def still_owner(self, position: Position) -> bool:
        latest = self.latest(position.topic, position.partition)
        return latest is not None and latest.claim == position.claim and latest.owner == position.owner

    def record(self, position: Position) -> None:
        """Write an intent row (before the flush's rollups)."""
        s = position.sequences_before
        row = [
            position.topic,
            position.partition,
            position.claim,
            position.first_offset,
            position.last_offset,
            list(s.nodes),
            list(s.boots),
            list(s.last_seqs),
            [list(run) for run in s.run_lows],
            [list(run) for run in s.run_highs],
            position.owner,
            dt.datetime.now(dt.UTC),
        ]
        try:
            self.client().insert(self.table, [row], column_names=list(_COLUMNS), settings=self.write_settings)
        except (ClickHouseError, OSError) as exc:
            raise translate(exc, f"insert into {self.table}", self.table) from exc

    def _query(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            result = self.client().query(sql, parameters=parameters, settings=self.read_settings)
        except (ClickHouseError, OSError) as exc:
            raise translate(exc, f"read {self.table}", self.table) from exc
        return list(result.result_rows)
