"""Delivery: partial rollups, under one token, into ClickHouse, with one policy for every runner.

    shipment = delivery.shipment(token, partials, records=n)  # rows put in key order
    while not delivery.attempt(shipment):
        wait delivery.wait_s()  (the caller's loop: a flush timer, a revocation check)

Every runner's flush goes through here (the WAL flusher, the in-memory journal
of `run --no-wal`, the Kafka partition writer), so they share one rule set.
What a caller may rely on:

- every table of a shipment is inserted under the shipment's token, one insert
  per table; a retry sends only the tables that have not landed, under the same
  token, so ClickHouse drops whatever part of an unacknowledged insert landed;
- rows are sorted by their keys (`in_key_order`): a shipment computed again from
  the same records is the same block row for row, which servers older than
  ClickHouse 26 need to recognise the token (the WAL's crash repair and the
  Kafka redo both rely on it);
- an insert that fails for a reason not proven to be about its rows (an
  outage, a cancelled query, limits, a denied user: `SinkUnavailableError`) is
  retried with exponential backoff, `initial_s` doubling to `max_s`, however often;
- a missing table or database (ClickHouse codes 60/81) is not a refusal: the
  schema is applied again before the next attempt;
- an insert refused because of its rows (`SinkRejectedError`, decided by
  `sinks.clickhouse.sink.translate`) is retried `refusals_before_dead_letter`
  times in all, then written to the dead letters with ClickHouse's reason and
  counted (`DeliveryStats.dead_lettered_rows`); the shipment moves on.

`attempt` never sleeps; it says when the next attempt is due (`wait_s`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import pyarrow as pa

from sinks.clickhouse.contract import TABLES_BY_NAME, WINDOW_COLUMN, Rollup
from sinks.errors import SinkError, SinkRejectedError

log = logging.getLogger(__name__)

# ClickHouse's UNKNOWN_TABLE and UNKNOWN_DATABASE.
SCHEMA_MISSING_CODES: Final = frozenset({60, 81})


class RollupSink(Protocol):
    def setup(self) -> None: ...

    def write(self, partials: Mapping[str, pa.Table], token: str) -> int: ...


class TableOutput(Protocol):
    """An extra table written in the same shipment, under the same token (the raw-event archive)."""

    name: str

    def setup(self) -> None: ...

    def write(self, table: pa.Table, token: str) -> int: ...


class DeadLetterFile(Protocol):
    """Where inserts refused for good go (pipelines.wal.deadletter.DeadLetters)."""

    def add(self, *, token: str, table: str, rows: pa.Table, reason: str, code: int | None) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    refusals_before_dead_letter: int = 3


class Backoff:
    """Exponential backoff: `initial_s` after the first failure, doubling to `max_s`, reset by a success."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.delay = policy.initial_s
        self.retry_at = 0.0

    def failed(self) -> float:
        """Schedule the next attempt; the seconds until it."""
        delay = self.delay
        self.retry_at = self.clock() + delay
        self.delay = min(delay * 2, self.policy.max_s)
        return delay

    def succeeded(self) -> bool:
        """Reset; True if this ends a run of failures."""
        recovered = self.delay > self.policy.initial_s
        self.delay = self.policy.initial_s
        self.retry_at = 0.0
        return recovered

    def wait_s(self) -> float:
        return max(0.0, self.retry_at - self.clock())


def in_key_order(name: str, table: pa.Table) -> pa.Table:
    """Rows sorted by their keys, so a range aggregated again is the same block, row for row.

    ClickHouse 26 deduplicates a token whatever the row order; older servers
    derive per-part ids from the order of the partitions in the block.
    Tables outside the contract (the archive) are returned as they are.
    """
    table_def = TABLES_BY_NAME.get(name)
    if table.num_rows < 2 or table_def is None:
        return table
    windowed = [WINDOW_COLUMN] if isinstance(table_def, Rollup) else []
    keys = [*windowed, *(k.name for k in table_def.keys)]
    return table.sort_by([(key, "ascending") for key in keys])


@dataclasses.dataclass(slots=True)
class DeliveryStats:
    """What a runner delivered (logs, /status, RunSummary)."""

    flushes: int = 0
    records_written: int = 0
    messages_written: int = 0
    rows_written: int = 0
    failed_attempts: int = 0
    dead_lettered_rows: int = 0
    dead_lettered_inserts: int = 0


@dataclasses.dataclass(slots=True)
class Shipment:
    """One flush: its token, its partial tables, and which of them have landed."""

    token: str
    partials: dict[str, pa.Table]
    records: int = 0
    messages: int = 0
    rows: int = 0
    done: set[str] = dataclasses.field(default_factory=set)
    refusals: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    created_at: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def delivered(self) -> bool:
        return all(name in self.done or t.num_rows == 0 for name, t in self.partials.items())


class Delivery:
    """Writes shipments to a sink (and extra outputs) under the policy above."""

    def __init__(
        self,
        sink: RollupSink,
        dead_letters: DeadLetterFile,
        *,
        policy: RetryPolicy | None = None,
        outputs: Mapping[str, TableOutput] | None = None,
        stats: DeliveryStats | None = None,
        keeper: str = "the data is kept",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.dead_letters = dead_letters
        self.policy = policy or RetryPolicy()
        self.outputs = dict(outputs or {})
        self.stats = stats if stats is not None else DeliveryStats()
        self.keeper = keeper  # who holds the rows while a write fails, for the log line
        self.backoff = Backoff(self.policy, clock)
        self.ready = False  # the schema is applied
        self.last_error: SinkError | None = None

    def shipment(
        self, token: str, partials: Mapping[str, pa.Table], *, records: int = 0, messages: int = 0
    ) -> Shipment:
        ordered = {name: in_key_order(name, table) for name, table in partials.items()}
        return Shipment(token, ordered, records=records, messages=messages)

    def wait_s(self) -> float:
        """Seconds until the next attempt is due (0: now)."""
        return self.backoff.wait_s()

    def setup(self) -> bool:
        """Apply the schema (sink and outputs); False, with the retry scheduled, if that failed."""
        try:
            self.sink.setup()
            for output in self.outputs.values():
                output.setup()
        except SinkError as exc:
            self.failed(exc, "ClickHouse setup")
            return False
        self.ready = True
        return True

    def attempt(self, shipment: Shipment) -> bool:
        """Send what has not landed yet; True once every table landed or went to the dead letters."""
        if not self.ready and not self.setup():
            return False
        for name, table in shipment.partials.items():
            if name in shipment.done or table.num_rows == 0:
                continue
            if not self._send(shipment, name, table):
                return False
            shipment.done.add(name)
        self.stats.flushes += 1
        self.stats.records_written += shipment.records
        self.stats.messages_written += shipment.messages
        if self.backoff.succeeded():
            log.info("ClickHouse writes succeed again (%s meanwhile)", self.keeper)
        self.last_error = None
        return True

    def _send(self, shipment: Shipment, name: str, table: pa.Table) -> bool:
        try:
            output = self.outputs.get(name)
            rows = (
                output.write(table, shipment.token)
                if output
                else self.sink.write({name: table}, shipment.token)
            )
        except SinkRejectedError as exc:
            return self._refused(shipment, name, table, exc)
        except SinkError as exc:
            if exc.code in SCHEMA_MISSING_CODES:
                # The server lost the schema (a new server, a dropped database): the rows are fine.
                self.ready = False
                self.failed(exc, f"insert {name} token={shipment.token} (schema missing)")
            else:
                self.failed(exc, f"insert {name} token={shipment.token}")
            return False
        self.stats.rows_written += rows
        shipment.rows += rows
        return True

    def _refused(self, shipment: Shipment, name: str, table: pa.Table, exc: SinkRejectedError) -> bool:
        # Only an error that proves the rows bad gets here (sinks.clickhouse.sink.translate):
        # nothing another client can cause to good rows ends in the dead letters.
        shipment.refusals[name] += 1
        if shipment.refusals[name] < self.policy.refusals_before_dead_letter:
            self.failed(
                exc, f"insert {name} token={shipment.token} (refused {shipment.refusals[name]} times)"
            )
            return False
        self.last_error = exc
        self.dead_letters.add(
            token=shipment.token, table=exc.table or name, rows=table, reason=str(exc), code=exc.code
        )
        self.stats.dead_lettered_rows += table.num_rows
        self.stats.dead_lettered_inserts += 1
        return True

    def failed(self, exc: SinkError, action: str) -> None:
        """Count a failed attempt (of this module's or a caller's own write) and schedule the retry."""
        self.stats.failed_attempts += 1
        self.last_error = exc
        delay = self.backoff.failed()
        log.warning("flush failed, retrying in %.1fs (%s; %s) error=%s", delay, action, self.keeper, exc)
