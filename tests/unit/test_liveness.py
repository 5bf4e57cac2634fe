"""Publisher liveness on hand-built batches with an injected clock."""

from __future__ import annotations

import logging

import pytest

from pipelines.firehose.liveness import PublisherLiveness
from pipelines.ingest import Ingestor
from pipelines.observe.watch import WorkerWatch
from pipelines.windows.batch import Batch
from tests.conftest import T0_NS
from tests.helpers import message

pytestmark = pytest.mark.unit
MS = 1_000_000


def batch(*messages: tuple[str, int, int, int], interval_ms: int | None = None) -> Batch:
    """(node, boot, seq, received_ns) per message; heartbeats when interval_ms is given."""
    ingestor = Ingestor(clock=lambda: T0_NS)
    for node, boot, seq, received in messages:
        if interval_ms is None:
            frames = message("tyk.analytics", [], node=node, boot=boot, seq=seq)
        else:
            record = {"node": node, "timestamp": T0_NS, "interval_ms": interval_ms}
            frames = message("tyk.heartbeat", [record], node=node, boot=boot, seq=seq)
        ingestor.ingest(frames, received_ns=received)
    return ingestor.take()


def test_stale_after_three_intervals_logged_once_and_live_again(caplog: pytest.LogCaptureFixture) -> None:
    liveness = PublisherLiveness()
    liveness.update(batch(("gw", 1, 0, T0_NS), interval_ms=100))
    with caplog.at_level(logging.INFO):
        assert liveness.check(T0_NS + 300 * MS) == []  # exactly 3 intervals: not yet
        assert [s.node for s in liveness.check(T0_NS + 301 * MS)] == ["gw"]
        assert liveness.check(T0_NS + 900 * MS) == []  # already stale: no second line
        liveness.update(batch(("gw", 1, 1, T0_NS + 1000 * MS)))
    lines = [r.getMessage() for r in caplog.records]
    assert sum("publisher stale node=gw" in line for line in lines) == 1
    assert sum("publisher live again node=gw" in line for line in lines) == 1
    (state,) = liveness.publishers()
    assert (state.messages, state.interval_ms, state.stale) == (2, 100, False)


def test_a_heartbeat_under_another_boot_of_the_name_leaves_this_incarnations_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Found by attack: intervals were applied per node to its newest boot, so a heartbeat under an
    # older boot of the name (any sender may claim a name) promised 1 ms for the real incarnation,
    # and was logged as a restart.
    liveness = PublisherLiveness()
    liveness.update(batch(("gw", 1000, 0, T0_NS), interval_ms=500))
    with caplog.at_level(logging.INFO):
        liveness.update(batch(("gw", 1, 0, T0_NS + MS), interval_ms=1))
    intervals = {s.boot: s.interval_ms for s in liveness.publishers()}
    assert intervals == {1000: 500, 1: 1}
    lines = [r.getMessage() for r in caplog.records]
    assert not any("restarted" in line for line in lines)
    assert any("older boot node=gw boot=1 newest_boot=1000" in line for line in lines)
    assert liveness.check(T0_NS + 1000 * MS) == [s for s in liveness.publishers() if s.boot == 1]


def test_default_interval_without_heartbeats_and_loss_accumulates() -> None:
    liveness = PublisherLiveness()
    liveness.update(batch(("gw", 1, 0, T0_NS), ("gw", 1, 5, T0_NS + MS)))
    (state,) = liveness.publishers()
    assert (state.lost, state.interval_ms) == (4, 1000)
    assert liveness.check(T0_NS + 3000 * MS) == []
    assert len(liveness.check(T0_NS + 3002 * MS)) == 1


def test_a_restarted_node_supersedes_its_old_incarnation_without_a_stale_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forgotten: list[tuple[str, int]] = []
    liveness = PublisherLiveness(on_forget=lambda node, boot: forgotten.append((node, boot)))
    liveness.update(batch(("gw", 1, 0, T0_NS)))
    liveness.update(batch(("gw", 2, 0, T0_NS + 500 * MS)))
    with caplog.at_level(logging.WARNING):
        liveness.check(T0_NS + 3200 * MS)
    assert forgotten == [("gw", 1)]
    assert [(s.node, s.boot, s.stale) for s in liveness.publishers()] == [("gw", 2, False)]
    assert "stale" not in caplog.text


def test_memory_is_bounded_by_retention_and_max_publishers() -> None:
    forgotten: list[tuple[str, int]] = []
    liveness = PublisherLiveness(
        retention_s=10, max_publishers=3, on_forget=lambda node, boot: forgotten.append((node, boot))
    )
    liveness.update(batch(*((f"n{i}", 1, 0, T0_NS + i * MS) for i in range(5))))
    liveness.check(T0_NS)
    assert [s.node for s in liveness.publishers()] == ["n0", "n1", "n2"]  # the newest arrivals went first
    liveness.check(T0_NS + 11_000 * MS)
    assert len(liveness) == 0
    assert sorted(forgotten) == [(f"n{i}", 1) for i in range(5)]


def test_a_flood_of_new_names_neither_evicts_the_publishers_before_it_nor_floods_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Found by attack: 12,000 heartbeats, each under a new (node, boot), pushed out a quiet real
    # publisher (the longest silent went first), so its sequence restarted and the 99 messages it
    # lost meanwhile were never counted; and each wrote a 'publisher first heard' line.
    ingestor = Ingestor(clock=lambda: T0_NS)
    liveness = PublisherLiveness(max_publishers=1000, on_forget=ingestor.sequences.forget)
    ingestor.ingest(message("tyk.analytics", [], node="gw-real", seq=0), received_ns=T0_NS)
    liveness.update(ingestor.take())
    with caplog.at_level(logging.INFO):
        for start in range(0, 12_000, 3_000):
            for i in range(start, start + 3_000):
                frames = message("tyk.analytics", [], node=f"made-up-{i}", boot=i, seq=0)
                ingestor.ingest(frames, received_ns=T0_NS + MS)
            liveness.update(ingestor.take())
            liveness.check(T0_NS + 2 * MS)
    assert len(liveness) == 1000
    assert "gw-real" in {s.node for s in liveness.publishers()}
    ingestor.ingest(message("tyk.analytics", [], node="gw-real", seq=100), received_ns=T0_NS + 3 * MS)
    assert ingestor.stats.lost == 99
    arrivals = [r for r in caplog.records if "first heard" in r.getMessage()]
    assert len(arrivals) < 300


def test_a_flood_of_new_names_that_falls_silent_does_not_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Found by attack on a real worker: 200,000 messages, each under a new (node, boot), wrote
    # 192,753 'publisher stale' warnings (the flood slowed the worker, so each name was overdue
    # at its first check, and was logged stale before the overflow forgot it).
    ingestor = Ingestor(clock=lambda: T0_NS)
    liveness = PublisherLiveness(max_publishers=1000, on_forget=ingestor.sequences.forget)
    with caplog.at_level(logging.INFO):
        for start in range(0, 12_000, 3_000):
            for i in range(start, start + 3_000):
                frames = message("tyk.analytics", [], node=f"made-up-{i}", boot=i, seq=0)
                ingestor.ingest(frames, received_ns=T0_NS + start * MS)
            liveness.update(ingestor.take())
            liveness.check(T0_NS + (start + 10_000) * MS)
    stale = [r for r in caplog.records if "publisher stale" in r.getMessage()]
    assert 0 < len(stale) < 300
    assert sum(s.stale for s in liveness.publishers()) == 1000


def goodbye(node: str, boot: int, seq: int, received: int) -> Batch:
    ingestor = Ingestor(clock=lambda: T0_NS)
    record = {"node": node, "timestamp": T0_NS, "interval_ms": 100, "bye": True}
    ingestor.ingest(message("tyk.heartbeat", [record], node=node, boot=boot, seq=seq), received_ns=received)
    return ingestor.take()


def test_a_goodbye_is_a_stop_not_staleness_until_the_node_is_heard_again() -> None:
    liveness = PublisherLiveness()
    liveness.update(batch(("gw", 1, 0, T0_NS), interval_ms=100))
    liveness.update(goodbye("gw", 1, 1, T0_NS + 50 * MS))
    assert liveness.check(T0_NS + 10_000 * MS) == []  # long silent: stopped, never stale
    (state,) = liveness.publishers()
    assert (state.state, state.stale) == ("stopped", False)
    liveness.update(batch(("gw", 1, 2, T0_NS + 20_000 * MS), interval_ms=100))  # heard again
    assert liveness.publishers()[0].state == "live"
    assert [s.node for s in liveness.check(T0_NS + 21_000 * MS)] == ["gw"]  # and can go stale again


def test_a_restart_after_a_goodbye_is_live_and_a_kill_without_one_turns_stale() -> None:
    liveness = PublisherLiveness()
    liveness.update(batch(("gw", 1, 0, T0_NS), ("other", 1, 0, T0_NS), interval_ms=100))
    liveness.update(goodbye("gw", 1, 1, T0_NS + 10 * MS))
    liveness.update(batch(("gw", 2, 0, T0_NS + 20 * MS), interval_ms=100))  # the new incarnation
    states = {(s.node, s.boot): s.state for s in liveness.publishers()}
    assert states == {("gw", 1): "stopped", ("gw", 2): "live", ("other", 1): "live"}
    turned = liveness.check(T0_NS + 1_000 * MS)
    assert sorted((s.node, s.boot) for s in turned) == [("gw", 2), ("other", 1)]


def test_a_slow_flush_does_not_make_a_talking_publisher_stale(caplog: pytest.LogCaptureFixture) -> None:
    """Silence is judged with what the last take held: a flush tick after a flush slower than
    three heartbeat intervals, messages received meanwhile not yet taken, is no silence."""
    now = [T0_NS]
    watch = WorkerWatch(Ingestor(), clock=lambda: now[0])
    watch.took(batch(("gw", 1, 0, T0_NS), interval_ms=100))
    now[0] = T0_NS + 700 * MS  # the flush took 700 ms; gw sent every 100 ms meanwhile
    with caplog.at_level(logging.INFO):
        watch.tick()
        watch.took(batch(("gw", 1, 6, T0_NS + 690 * MS), interval_ms=100))
        assert [s.stale for s in watch.publisher_states()] == [False]
        now[0] = T0_NS + 1000 * MS  # then nothing at all: the next take (empty) judges it stale
        watch.tick()
        watch.took(Batch.empty())
        assert [s.stale for s in watch.publisher_states()] == [True]
    lines = [r.getMessage() for r in caplog.records]
    assert sum("publisher stale node=gw" in line for line in lines) == 1
    assert not any("live again" in line for line in lines)
    # where nothing is taken (a log with nothing new), the next tick judges it
    quiet = WorkerWatch(Ingestor(), clock=lambda: now[0])
    quiet.took(batch(("gw", 1, 0, T0_NS + 1000 * MS), interval_ms=100))
    quiet.tick()
    now[0] = T0_NS + 1400 * MS
    quiet.tick()
    assert [s.stale for s in quiet.publisher_states()] == [True]
