"""Positions in the real engine, and a crash between a flush's inserts leaves nothing lost or doubled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.delivery import Delivery, in_key_order
from pipelines.firehose.kafka_record import read_envelope, to_record
from pipelines.firehose.sequence import Verdict
from pipelines.ingest import Ingestor, ReplayClock
from pipelines.keys import KeyHasher
from pipelines.runners.kafka_partition import PartitionProcessor, restore
from pipelines.runners.kafka_writer import FlushWriter
from pipelines.simulate.verify import fetch_view
from pipelines.wal.deadletter import DeadLetters
from sinks.clickhouse.positions import Position, PositionStore, SequenceState
from sinks.clickhouse.sink import ClickHouseSink
from tests.conftest import T0_NS
from tests.helpers import analytics, event, message

pytestmark = pytest.mark.component
VIEWS = ("traffic_1m", "traffic_1h", "rate_limit_hits_1m", "ingest_health_1m")


def make_ingestor() -> Ingestor:
    return Ingestor(clock=ReplayClock(), hasher=KeyHasher(b"salt"))


def kafka_log(count: int = 40) -> list[tuple[int, int, Any]]:
    out = []
    for seq in range(count):
        ts = T0_NS + seq * 3 * 10**9
        if seq % 4 == 3:
            frames = message(
                "tyk.event.RatelimitExceeded", [event("RatelimitExceeded", ts, key=f"k{seq}")], seq=seq
            )
        else:
            frames = message("tyk.analytics", [analytics(ts + i, api=f"a{i % 3}") for i in range(5)], seq=seq)
        out.append((seq, T0_NS // 1_000_000 + seq * 100, to_record(frames, read_envelope(frames[1]))))
    return out


def writer_of(sink: ClickHouseSink, store: PositionStore, directory: Path) -> FlushWriter:
    return FlushWriter(Delivery(sink, DeadLetters(directory / "dead-letter.jsonl")), store)


def store_of(sink: ClickHouseSink) -> PositionStore:
    return PositionStore(lambda: sink.client, sink.database)


def views(sink: ClickHouseSink) -> dict[str, list[str]]:
    return {v: sorted(map(repr, fetch_view(sink.client, sink.database, v))) for v in VIEWS}


def run(
    processor: PartitionProcessor, writer: FlushWriter, log: list[tuple[int, int, Any]], every: int
) -> None:
    for i, (offset, ts, record) in enumerate(log):
        processor.add(offset, ts, record.value, record.headers)
        if processor.at_redo_end or (processor.can_flush and (i + 1) % every == 0):
            assert writer.write(processor.take_flush(), lambda: True)
    if processor.can_flush:
        assert writer.write(processor.take_flush(), lambda: True)


def test_claims_number_owners_and_keep_the_latest_range(sink: ClickHouseSink) -> None:
    store = store_of(sink)
    assert store.latest("t", 3) is None
    first = store.claim("t", 3, "w1", start_offset=5)
    assert (first.claim, first.first_offset, first.is_empty) == (1, 5, True)
    state = SequenceState(("gw1",), (7,), (41,))
    store.record(first.__class__("t", 3, 1, 5, 9, state, "w1"))
    second = store.claim("t", 3, "w2")
    assert (second.claim, second.first_offset, second.last_offset, second.sequences_before) == (
        2,
        5,
        9,
        state,
    )
    assert store.still_owner(second)
    assert not store.still_owner(first)
    assert store.latest("t", 4) is None


def test_crash_between_inserts_then_successor_redo_is_exact(
    sink: ClickHouseSink, clickhouse: Any, tmp_path: Path
) -> None:
    log = kafka_log()
    # One pass, for reference, in a database of its own.
    reference = ClickHouseSink(clickhouse.model_copy(update={"clickhouse_database": sink.database + "_ref"}))
    reference.setup()
    run(
        PartitionProcessor(store_of(reference).claim("t", 0, "ref"), make_ingestor),
        writer_of(reference, store_of(reference), tmp_path),
        log,
        7,
    )
    expected = views(reference)
    reference.close()

    store = store_of(sink)
    writer = writer_of(sink, store, tmp_path)
    first = PartitionProcessor(store.claim("t", 0, "w1"), make_ingestor)
    run(first, writer, log[:13], 5)
    for offset, ts, record in log[13:20]:
        first.add(offset, ts, record.value, record.headers)
    doomed = first.take_flush()
    store.record(doomed.position)  # the intent landed, then only one rollup before the "crash"
    sink.write({"traffic": in_key_order("traffic", doomed.partials["traffic"])}, doomed.position.token)

    successor = PartitionProcessor(store.claim("t", 0, "w2"), make_ingestor)
    assert (successor.next_offset, successor.redo_until) == (13, 19)
    assert not writer.write(doomed, lambda: True)  # the dead worker's flush is fenced off now
    run(successor, writer_of(sink, store, tmp_path), log[10:], 6)  # Kafka may redeliver from before the range
    assert views(sink) == expected
    assert expected["traffic_1m"]
    assert expected["rate_limit_hits_1m"]


def test_runs_of_seqs_go_through_the_table_and_an_older_table_gets_their_columns(
    sink: ClickHouseSink,
) -> None:
    store = store_of(sink)
    state = SequenceState(("gw1", "gw2"), (7, 1), (41, 3), ((0, 41), (3,)), ((9, 41), (3,)))
    store.record(Position("t", 1, 1, 0, 9, state, "w1"))
    latest = store.latest("t", 1)
    assert latest is not None
    assert latest.sequences_before == state
    # a positions table made by an older version (no run columns), with a row of its own: the
    # schema's next apply adds the columns, and the old row reads as its last seqs alone
    table = f"{sink.database}.kafka_positions"
    sink.client.command(f"DROP TABLE {table}")
    sink.client.command(
        f"CREATE TABLE {table} (topic String, partition UInt32, claim UInt64, first_offset Int64, "
        "last_offset Int64, seq_nodes Array(String), seq_boots Array(Int64), seq_last Array(Int64), "
        "owner String, written_at DateTime64(3, 'UTC'), version UInt128 MATERIALIZED "
        "bitShiftLeft(toUInt128(claim), 64) + toUInt128(last_offset + 1)) "
        "ENGINE = ReplacingMergeTree(version) ORDER BY (topic, partition)"
    )
    sink.client.command(
        f"INSERT INTO {table} (topic, partition, claim, first_offset, last_offset, seq_nodes, seq_boots, "
        "seq_last, owner, written_at) VALUES ('t', 2, 1, 0, 4, ['gw1'], [7], [41], 'w0', now64(3))"
    )
    sink.setup()
    old = store.latest("t", 2)
    assert old is not None
    assert old.sequences_before == SequenceState(("gw1",), (7,), (41,))  # no runs: empty columns
    tracker = restore(old.sequences_before)
    assert tracker.observe("gw1", 7, 41).verdict is Verdict.DUPLICATE
    assert tracker.observe("gw1", 7, 40).verdict is Verdict.ACCEPT
