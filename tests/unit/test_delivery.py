"""The one delivery policy (pipelines.delivery): retry, refusal -> dead letters, schema reset, key order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pytest

from pipelines.delivery import Delivery, RetryPolicy, in_key_order
from pipelines.ingest import Ingestor, ReplayClock
from pipelines.keys import KeyHasher
from pipelines.memory_journal import MemoryJournal
from pipelines.runners.kafka_partition import PartitionFlush
from pipelines.runners.kafka_writer import FlushWriter
from sinks.clickhouse.positions import Position, SequenceState
from sinks.errors import SinkError, SinkRejectedError, SinkUnavailableError
from tests.conftest import T0_NS
from tests.helpers import analytics, message

pytestmark = pytest.mark.unit

Fault = Callable[[str, int], SinkError | None]  # (table, attempt at that table) -> error to raise


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSink:
    def __init__(self, fault: Fault | None = None) -> None:
        self.fault = fault
        self.setups = 0
        self.attempts: dict[str, int] = {}
        self.landed: list[tuple[str, str, pa.Table]] = []

    def setup(self) -> None:
        self.setups += 1

    def write(self, partials: Mapping[str, pa.Table], token: str) -> int:
        ((name, table),) = partials.items()
        self.attempts[name] = self.attempts.get(name, 0) + 1
        error = self.fault(name, self.attempts[name]) if self.fault else None
        if error is not None:
            raise error
        self.landed.append((token, name, table))
        rows: int = table.num_rows
        return rows


class FakeDeadLetters:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(self, *, token: str, table: str, rows: pa.Table, reason: str, code: int | None) -> None:
        self.entries.append({"token": token, "table": table, "rows": rows.num_rows, "code": code})


def traffic(*rows: tuple[int, str, str]) -> pa.Table:
    windows, orgs, apis = zip(*rows, strict=True)
    return pa.table({"window_start": list(windows), "org_id": list(orgs), "api_id": list(apis)})


PARTIALS = {
    "traffic": traffic((60, "o2", "a"), (0, "o1", "b"), (0, "o1", "a")),
    "ingest_health": pa.table({"window_start": [0], "node_id": ["gw1"]}),
}


def make(fault: Fault | None = None, **policy: Any) -> tuple[Delivery, FakeSink, FakeDeadLetters, FakeClock]:
    sink, dead, clock = FakeSink(fault), FakeDeadLetters(), FakeClock()
    delivery = Delivery(sink, dead, policy=RetryPolicy(**policy), clock=clock)
    return delivery, sink, dead, clock


def test_rows_go_out_in_key_order_so_a_redo_is_the_same_block() -> None:
    delivery, sink, _, _ = make()
    shipment = delivery.shipment("t1", PARTIALS, records=3)
    assert delivery.attempt(shipment)
    sent = {name: table for _, name, table in sink.landed}
    assert sent["traffic"].to_pylist() == [
        {"window_start": 0, "org_id": "o1", "api_id": "a"},
        {"window_start": 0, "org_id": "o1", "api_id": "b"},
        {"window_start": 60, "org_id": "o2", "api_id": "a"},
    ]
    shuffled = PARTIALS["traffic"].take([2, 0, 1])
    assert in_key_order("traffic", shuffled).equals(sent["traffic"])
    assert (delivery.stats.flushes, delivery.stats.rows_written, delivery.stats.records_written) == (1, 4, 3)


def test_tables_outside_the_contract_keep_their_order() -> None:
    table = pa.table({"x": [3, 1, 2]})
    assert in_key_order("events_raw", table) is table


def test_an_outage_is_retried_with_doubling_backoff_and_only_unlanded_tables_are_resent() -> None:
    def down(name: str, attempt: int) -> SinkError | None:
        return SinkUnavailableError("down") if name == "ingest_health" and attempt <= 4 else None

    delivery, sink, dead, clock = make(down, initial_s=0.5, max_s=2.0)
    shipment = delivery.shipment("t1", PARTIALS)
    waits = []
    while not delivery.attempt(shipment):
        waits.append(delivery.wait_s())
        clock.now += delivery.wait_s()
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert sink.attempts == {"traffic": 1, "ingest_health": 5}, "a landed table is not sent again"
    assert {token for token, _, _ in sink.landed} == {"t1"}
    assert delivery.stats.failed_attempts == 4
    assert not dead.entries
    assert delivery.backoff.delay == 0.5, "a success resets the backoff"


def test_rows_refused_for_good_go_to_the_dead_letters_after_the_policy_s_refusals() -> None:
    def bad(name: str, attempt: int) -> SinkError | None:
        return SinkRejectedError("type mismatch", table=name, code=53) if name == "traffic" else None

    delivery, sink, dead, clock = make(bad, refusals_before_dead_letter=3)
    shipment = delivery.shipment("t1", PARTIALS)
    outcomes = []
    for _ in range(3):
        outcomes.append(delivery.attempt(shipment))
        clock.now += delivery.wait_s()
    assert outcomes == [False, False, True]
    assert dead.entries == [{"token": "t1", "table": "traffic", "rows": 3, "code": 53}]
    assert delivery.stats.dead_lettered_rows == 3
    assert [name for _, name, _ in sink.landed] == ["ingest_health"], "the rest of the flush lands"


def test_a_missing_schema_is_applied_again_and_is_not_a_refusal() -> None:
    def lost_schema(name: str, attempt: int) -> SinkError | None:
        return SinkUnavailableError("UNKNOWN_TABLE", code=60) if attempt == 1 else None

    delivery, sink, dead, clock = make(lost_schema, refusals_before_dead_letter=1)
    shipment = delivery.shipment("t1", PARTIALS)
    assert not delivery.attempt(shipment)
    assert sink.setups == 1
    assert not delivery.ready
    clock.now += delivery.wait_s()
    assert not delivery.attempt(shipment), "the second table's schema is missing too"
    clock.now += delivery.wait_s()
    assert delivery.attempt(shipment)
    assert sink.setups == 3, "setup before every attempt after a schema loss"
    assert not dead.entries


def test_attempt_never_sleeps_it_says_when_the_next_is_due() -> None:
    delivery, _, _, clock = make(lambda name, attempt: SinkUnavailableError("down"), initial_s=4.0)
    assert not delivery.attempt(delivery.shipment("t1", PARTIALS))
    assert delivery.wait_s() == 4.0
    clock.now += 3.0
    assert delivery.wait_s() == 1.0


class FakeStore:
    def __init__(self) -> None:
        self.recorded: list[Position] = []

    def still_owner(self, position: Position) -> bool:
        return True

    def record(self, position: Position) -> None:
        self.recorded.append(position)


def test_the_kafka_path_dead_letters_a_refused_flush_instead_of_dropping_it() -> None:
    def bad(name: str, attempt: int) -> SinkError | None:
        return SinkRejectedError("bad rows", table=name, code=27) if name == "traffic" else None

    sink, dead = FakeSink(bad), FakeDeadLetters()
    policy = RetryPolicy(initial_s=0.001, max_s=0.001, refusals_before_dead_letter=2)
    delivery = Delivery(sink, dead, policy=policy)  # the real clock: the writer sleeps until due
    store = FakeStore()
    writer = FlushWriter(delivery, store)  # type: ignore[arg-type]  # a fake PositionStore
    position = Position("t", 0, 1, 10, 19, SequenceState(), "me")
    assert writer.write(PartitionFlush(position, PARTIALS, records=3, messages=1), lambda: True)
    assert dead.entries == [{"token": position.token, "table": "traffic", "rows": 3, "code": 27}]
    assert [name for _, name, _ in sink.landed] == ["ingest_health"]
    assert store.recorded, "the intent before the rollups"
    assert all(p == position for p in store.recorded)
    assert writer.stats.flushes == 1


def test_without_the_log_a_backed_up_sink_holds_the_receiver_back_instead_of_dropping() -> None:
    outage = {"on": True}
    sink = FakeSink(lambda name, attempt: SinkUnavailableError("down") if outage["on"] else None)
    clock = FakeClock()
    delivery = Delivery(sink, FakeDeadLetters(), policy=RetryPolicy(initial_s=1.0, max_s=1.0), clock=clock)
    ingestor = Ingestor(clock=ReplayClock(), hasher=KeyHasher(b"salt"), max_pending_records=3)
    journal = MemoryJournal(ingestor, delivery, max_pending_flushes=2)
    for seq in range(6):
        ingestor.ingest_many([message("tyk.analytics", [analytics(T0_NS + seq)], seq=seq)], [T0_NS])
        journal.flush()
        clock.now += 1.0
    assert journal.unwritten_flushes() == 3, "two flushes wait, and the Ingestor holds the rest"
    assert ingestor.pending_records == 4
    assert not journal.wait_for_room(0), "the receiver waits: ZeroMQ drops, counted as lost_messages"
    outage["on"] = False
    assert journal.finish(timeout_s=5)
    assert journal.unwritten_flushes() == 0
    assert delivery.stats.records_written == 6, "nothing received was dropped"
    assert [token.rsplit("-", 1)[1] for token, name, _ in sink.landed if name == "traffic"] == ["1", "2", "3"]
