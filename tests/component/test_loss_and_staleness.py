"""Loss and staleness over real ZeroMQ into embedded ClickHouse, checked against what was sent.

The invariant: for every publisher, messages counted + messages reported lost
== messages sent (the publisher's own sequence counter is the ground truth).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import zmq

from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.runners.local import LocalRunner, RunSummary
from pipelines.settings import FirehoseSettings, WorkerSettings
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.harness.processes import free_port
from tests.harness.tykpulse import wait_until
from tests.helpers import analytics
from tests.hostile import garbage_with_valid_envelopes

pytestmark = pytest.mark.component


@contextmanager
def running_worker(
    context: zmq.Context[Any],
    clickhouse: ClickHouseSettings,
    endpoints: list[str],
    *,
    rcvhwm: int = 200_000,
    max_pending_records: int = 2_000_000,
) -> Iterator[LocalRunner]:
    sink = ClickHouseSink(clickhouse)
    runner = LocalRunner(
        FirehoseSettings(firehose=endpoints, rcvhwm=rcvhwm),
        WorkerSettings(flush_interval_s=0.1, drain_timeout_s=0.3, max_pending_records=max_pending_records),
        sink,
        context=context,
    )
    stop = threading.Event()
    result: list[RunSummary] = []
    thread = threading.Thread(target=lambda: result.append(runner.run(stop)), name="test-worker")
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(120)
        sink.close()
    assert result, "the worker failed"


def settle(runner: LocalRunner, publisher: FirehosePublisher) -> None:
    """Heartbeat until the worker has seen this publisher's last message (so no loss is trailing)."""
    for node, state in publisher.nodes.items():
        deadline = time.monotonic() + 60
        while runner.ingestor.sequences.last_seq(node, state.boot) != state.seq - 1:
            assert time.monotonic() < deadline, f"{node}: last message never arrived"
            publisher.heartbeat(node)
            time.sleep(0.05)


def query(clickhouse: ClickHouseSettings, sql: str) -> list[tuple[Any, ...]]:
    sink = ClickHouseSink(clickhouse)
    try:
        return sink.query_rows(sql.replace("DB.", f"{clickhouse.clickhouse_database}."))
    finally:
        sink.close()


def test_messages_counted_plus_lost_equals_sent_for_steady_skipping_and_flooding_publishers(
    zmq_context: zmq.Context[Any], clickhouse: ClickHouseSettings
) -> None:
    ports = [free_port() for _ in range(3)]
    steady = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{ports[0]}")], node="steady")
    skipper = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{ports[1]}")], node="skipper")
    flood = FirehosePublisher(
        zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{ports[2]}")], node="flood", sndhwm=50
    )
    publishers = [steady, skipper, flood]
    skipped = 0
    try:
        with running_worker(
            zmq_context,
            clickhouse,
            [f"tcp://127.0.0.1:{p}" for p in ports],
            rcvhwm=50,
            max_pending_records=20_000,
        ) as runner:
            for publisher in publishers:
                assert publisher.wait_for_subscribers(30)
            for i in range(300):
                steady.publish("tyk.analytics", [analytics(time.time_ns())])
                skipper.publish("tyk.analytics", [analytics(time.time_ns())])
                if i % 10 == 9:
                    skipper.nodes["skipper"].seq += 3  # three messages the network "ate"
                    skipped += 3
            records = [analytics(time.time_ns(), api=f"api{i % 7}") for i in range(200)]
            for _ in range(20_000):  # unpaced: ZeroMQ drops at the high-water marks
                flood.publish("tyk.analytics", records)
            for publisher in publishers:
                settle(runner, publisher)
            metrics_lost = runner.watch.totals()["lost"]
    finally:
        for publisher in publishers:
            publisher.close(0, goodbye=False)  # the worker has stopped: a goodbye would go unheard
    health = {
        row[0]: (row[1], row[2])
        for row in query(
            clickhouse,
            "SELECT node_id, sum(messages), sum(lost_messages) FROM DB.ingest_health_1m GROUP BY node_id",
        )
    }
    for publisher in publishers:
        node = publisher.default_node
        assert node is not None
        counted, lost = health[node.node]
        assert counted + lost == node.seq, node.node  # every message sent is counted or reported lost
    assert health["steady"][1] == 0
    assert health["skipper"][1] == skipped
    assert health["flood"][1] > 0, "the flood did not overrun the high-water marks"
    assert metrics_lost == sum(lost for _, lost in health.values())
    registry = {
        row[0]: (row[1], row[2])
        for row in query(clickhouse, "SELECT node_id, messages, lost_messages FROM DB.publishers")
    }
    assert registry == health


def test_garbage_payloads_with_valid_envelopes_are_rejected_messages_not_lost_ones(
    zmq_context: zmq.Context[Any], clickhouse: ClickHouseSettings
) -> None:
    port = free_port()
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="mixed")
    state = publisher.nodes["mixed"]
    garbage = good = 0
    try:
        with running_worker(zmq_context, clickhouse, [f"tcp://127.0.0.1:{port}"]) as runner:
            assert publisher.wait_for_subscribers(30)
            for _ in range(5):
                publisher.publish("tyk.analytics", [analytics(time.time_ns())])
                good += 1
                # refused as a whole, numbered in the same sequence as every message the node sends
                for frames in garbage_with_valid_envelopes(time.time_ns(), "mixed", state.boot, state.seq):
                    publisher.socket.send_multipart(frames)
                    state.seq += 1
                    garbage += 1
            settle(runner, publisher)
    finally:
        publisher.close(0, goodbye=False)  # after the worker stopped: unheard, and not part of the count
    [(messages, lost, rejected_messages, rejected)] = query(
        clickhouse,
        "SELECT sum(messages), sum(lost_messages), sum(rejected_messages), sum(rejected) "
        "FROM DB.ingest_health_1m WHERE node_id = 'mixed'",
    )
    assert lost == 0
    assert rejected_messages == garbage == 20
    assert rejected >= garbage
    assert messages + rejected_messages == state.seq  # every message sent is accounted for
    assert messages >= good


def test_a_silent_publisher_turns_stale_once_and_live_again_when_heard(
    zmq_context: zmq.Context[Any], clickhouse: ClickHouseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    publisher = FirehosePublisher(
        zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], heartbeat_interval_ms=200
    )
    for node in ("quiet", "chatty"):
        publisher.add_node(node)
    patient = FirehosePublisher(
        zmq_context,
        [parse_endpoint(f"@tcp://127.0.0.1:{free_port()}")],
        node="patient",
        heartbeat_interval_ms=600_000,
    )

    def lines(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    def heartbeat_until(condition: Callable[[], bool], nodes: list[str]) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline
            for node in nodes:
                publisher.heartbeat(node)
            time.sleep(0.05)

    try:
        with running_worker(
            zmq_context, clickhouse, [f"tcp://127.0.0.1:{port}", patient.addresses[0]]
        ) as runner:
            assert publisher.wait_for_subscribers(30)
            assert patient.wait_for_subscribers(30)
            patient.heartbeat()
            heartbeat_until(lambda: len(runner.watch.publisher_states()) >= 2, ["quiet", "chatty"])
            # quiet goes silent; chatty keeps its promise
            heartbeat_until(lambda: lines("publisher stale node=quiet") >= 1, ["chatty"])
            for _ in range(20):  # a while longer silent: still only one stale line
                publisher.heartbeat("chatty")
                time.sleep(0.05)
            heartbeat_until(lambda: lines("publisher live again node=quiet") >= 1, ["quiet", "chatty"])
            states = {s.node: s for s in runner.watch.publisher_states()}
            assert not states["quiet"].stale
            assert states["quiet"].interval_ms == 200
    finally:
        publisher.close(0)
        patient.close(0)
    assert lines("publisher stale node=quiet") == 1
    assert lines("publisher live again node=quiet") == 1
    assert lines("publisher stale node=chatty") == 0
    assert lines("publisher stale node=patient") == 0
    # the view decides from last_seen and the promised interval, worker or no worker: the
    # 200 ms publishers turn stale within 600 ms of their last heartbeat, the one that
    # promised a heartbeat every 10 minutes stays live
    sink = ClickHouseSink(clickhouse)
    sql = f"SELECT node_id, interval_ms, state, messages FROM {clickhouse.clickhouse_database}.publishers"
    try:
        rows: dict[str, tuple[Any, ...]] = {}
        deadline = time.monotonic() + 30
        while rows.get("quiet", (0, "live"))[1] != "stale" or rows["chatty"][1] != "stale":
            assert time.monotonic() < deadline
            rows = {row[0]: row[1:] for row in sink.query_rows(sql)}
    finally:
        sink.close()
    assert rows["quiet"][:2] == (200, "stale")
    assert rows["chatty"][:2] == (200, "stale")
    assert rows["patient"] == (600_000, "live", 1)


def test_a_publisher_that_closes_cleanly_is_stopped_and_one_killed_is_stale(
    zmq_context: zmq.Context[Any], clickhouse: ClickHouseSettings
) -> None:
    clean, killed = (
        FirehosePublisher(
            zmq_context,
            [parse_endpoint(f"@tcp://127.0.0.1:{free_port()}")],
            node=node,
            heartbeat_interval_ms=100,
        )
        for node in ("clean", "killed")
    )
    try:
        with running_worker(zmq_context, clickhouse, [clean.addresses[0], killed.addresses[0]]) as runner:
            for publisher in (clean, killed):
                assert publisher.wait_for_subscribers(30)
                publisher.publish("tyk.analytics", [analytics(time.time_ns())])
                settle(runner, publisher)
            clean.close()  # a planned stop: says goodbye
            killed.close(0, goodbye=False)  # as if killed: no goodbye

            def states() -> dict[str, str]:
                return {p["node"]: p["state"] for p in runner.watch.status()["publishers"]}

            wait_until(
                lambda: states() == {"clean": "stopped", "killed": "stale"}, "one stopped, one stale", 60
            )
            time.sleep(0.5)  # later flushes change nothing
            assert states() == {"clean": "stopped", "killed": "stale"}
    finally:
        clean.close(0, goodbye=False)
        killed.close(0, goodbye=False)
    view = dict(query(clickhouse, "SELECT node_id, state FROM DB.publishers"))
    assert view == {"clean": "stopped", "killed": "stale"}
    goodbyes = dict(
        query(clickhouse, "SELECT node_id, sum(goodbyes) FROM DB.ingest_health_1m GROUP BY node_id")
    )
    assert goodbyes == {"clean": 1, "killed": 0}
