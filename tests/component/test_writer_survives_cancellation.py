"""A reader cannot make the writer lose data: cancelled inserts are retried, never dead-lettered.

The attack from the security review: someone who can run SQL on the worker's
engine loops `KILL QUERY WHERE query ILIKE 'INSERT INTO <db>.%' ASYNC`. Every
insert it hits fails with 394 QUERY_WAS_CANCELLED. That says nothing about the
rows, so the WAL flusher must keep them and retry, however many times it
happens, and the rollups must end up exact.

The first test is the real thing on the real engine: a second in-process
handle on the worker's chDB kills the flusher's inserts (not the served HTTP
endpoint, which is to refuse KILL from readers). An extra materialized view
on the traffic input table sleeps on each block, so each traffic insert is
in flight long enough for the killer to hit it every time. The second test
raises the driver's own 394 exception from the client, so the count of
cancellations is exact. Ground truth is the workload's arithmetic
(tests.durability), never the flusher's own counts.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from pipelines.wal.deadletter import DEAD_LETTER_FILE
from pipelines.wal.flusher import DurableFlusher
from pipelines.windows.batch import Batch
from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkError
from tests.component.test_wal_flusher import NODE, drain, log_messages, make_flusher
from tests.durability import base_window_s, check_exact

pytestmark = pytest.mark.component

QUERY_WAS_CANCELLED = 394
REFUSALS_BEFORE_DEAD_LETTER = 3
# More cancellations than the refusals that used to send an insert to the dead-letter file.
CANCELLATIONS = REFUSALS_BEFORE_DEAD_LETTER + 3
MESSAGES = 40


@dataclasses.dataclass
class FailureLog:
    """A FlushObserver that keeps what each failed attempt raised."""

    errors: list[SinkError] = dataclasses.field(default_factory=list)
    wal_readings: Callable[[], dict[str, float]] | None = None

    def took(self, batch: Batch) -> None:
        pass

    def wrote(self, seconds: float, rows: int) -> None:
        pass

    def failed(self, error: SinkError) -> None:
        self.errors.append(error)

    def codes(self) -> list[int | None]:
        return [error.code for error in self.errors]


def assert_nothing_lost(flusher: DurableFlusher, sink: ClickHouseSink, wal_dir: Path, base: int) -> None:
    assert flusher.stats.dead_lettered_rows == 0
    dead_letters = wal_dir / DEAD_LETTER_FILE
    assert not dead_letters.exists() or dead_letters.read_text() == "", dead_letters.read_text()
    assert check_exact(sink.client, sink.database, NODE, base, set(range(MESSAGES)), MESSAGES) == []


# -- a real KILL QUERY on the real engine ----------------------------------------------------------


def slow_down_traffic_inserts(sink: ClickHouseSink, seconds: float) -> None:
    """Every insert into traffic's input table sleeps `seconds` (sleep() sleeps once per block)."""
    sink.client.command(
        f"CREATE MATERIALIZED VIEW {sink.database}.test_drag ENGINE = Null "
        f"AS SELECT sleep({seconds}) AS slept FROM {sink.database}.traffic_in"
    )


class Killer:
    """A second handle on the worker's engine that cancels its inserts until told to stop."""

    def __init__(self, clickhouse: ClickHouseSettings) -> None:
        self.client = connect(clickhouse)
        self.pattern = f"INSERT INTO {clickhouse.clickhouse_database}.%"
        self.killed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="killer", daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            result = self.client.query(
                "KILL QUERY WHERE query ILIKE %(pattern)s ASYNC", parameters={"pattern": self.pattern}
            )
            self.killed += len(result.result_rows)
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        # chDB keeps its engine (and its one data path per process) while any handle is open.
        self.client.close()


def test_inserts_killed_by_a_reader_are_retried_until_they_land(
    sink: ClickHouseSink, clickhouse: ClickHouseSettings, tmp_path: Path
) -> None:
    base = base_window_s()
    wal_dir = tmp_path / "wal"
    slow_down_traffic_inserts(sink, 0.5)
    flusher = make_flusher(
        wal_dir, sink, sink_refusals_before_dead_letter=REFUSALS_BEFORE_DEAD_LETTER, sink_retry_max_s=0.02
    )
    failures = FailureLog()
    flusher.observer = failures
    log_messages(flusher, range(MESSAGES), base)
    killer = Killer(clickhouse)
    killer.thread.start()
    try:
        deadline = time.monotonic() + 60
        while failures.codes().count(QUERY_WAS_CANCELLED) < CANCELLATIONS:
            assert time.monotonic() < deadline, f"only {failures.codes()} after 60 s"
            flusher.flush()
            assert flusher.stats.dead_lettered_rows == 0, "a cancelled insert went to the dead-letter file"
    finally:
        killer.close()
    drain(flusher)
    flusher.close()
    assert killer.killed >= CANCELLATIONS
    assert set(failures.codes()) == {QUERY_WAS_CANCELLED}, failures.errors
    assert_nothing_lost(flusher, sink, wal_dir, base)


# -- the driver's own exception, an exact number of times -----------------------------------------


class CancellingClient:
    """The sink's real client, but its next `times` inserts fail as a KILL QUERY makes them fail."""

    def __init__(self, client: Any, times: int) -> None:
        self.client = client
        self.left = times

    def insert_arrow(self, table: str, rows: pa.Table, **options: Any) -> Any:
        if self.left > 0:
            self.left -= 1
            # What clickhouse-connect's chDB backend raises for a killed query.
            msg = "Code: 394. DB::Exception: Query was cancelled. (QUERY_WAS_CANCELLED)"
            raise DatabaseError(msg, code=QUERY_WAS_CANCELLED, name="QUERY_WAS_CANCELLED")
        return self.client.insert_arrow(table, rows, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_an_insert_cancelled_more_often_than_the_refusal_limit_still_lands(
    sink: ClickHouseSink, tmp_path: Path
) -> None:
    base = base_window_s()
    wal_dir = tmp_path / "wal"
    flusher = make_flusher(wal_dir, sink, sink_refusals_before_dead_letter=REFUSALS_BEFORE_DEAD_LETTER)
    failures = FailureLog()
    flusher.observer = failures
    sink._client = CancellingClient(sink.client, CANCELLATIONS)
    log_messages(flusher, range(MESSAGES), base)
    drain(flusher)
    flusher.close()
    assert failures.codes() == [QUERY_WAS_CANCELLED] * CANCELLATIONS
    assert_nothing_lost(flusher, sink, wal_dir, base)
