"""A worker under hostile input and loss over real ZeroMQ: metrics, /healthz, /status, and the
views in embedded ClickHouse (no good record lost, rejections by reason, delivery latency)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.ingest import Ingestor
from pipelines.observe.server import MetricsServer
from pipelines.observe.watch import WorkerWatch
from pipelines.runners.local import LocalRunner, RunSummary, build_ingestor
from pipelines.settings import FirehoseSettings, WorkerSettings
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.harness.processes import free_port
from tests.helpers import analytics
from tests.hostile import hostile_messages

pytestmark = pytest.mark.component


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback test server
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, body = get(f"http://127.0.0.1:{port}/metrics")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_worker_under_hostile_input_and_loss_reports_everything_and_keeps_every_good_record(
    zmq_context: zmq.Context[Any], clickhouse: ClickHouseSettings
) -> None:
    port = free_port()
    firehose = FirehoseSettings(firehose=[f"tcp://127.0.0.1:{port}"])
    worker = WorkerSettings(flush_interval_s=0.1, drain_timeout_s=0.3)
    ingestor = build_ingestor(firehose, worker)
    watch = WorkerWatch(ingestor)
    server = MetricsServer(watch, "127.0.0.1", 0).start()
    sink = ClickHouseSink(clickhouse)
    runner = LocalRunner(firehose, worker, sink, context=zmq_context, ingestor=ingestor, watch=watch)
    stop = threading.Event()
    result: list[RunSummary] = []
    thread = threading.Thread(target=lambda: result.append(runner.run(stop)))
    thread.start()
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="good")
    now = time.time_ns()
    catalogue = hostile_messages(now)
    cases = [c for c in catalogue if c[1][0].startswith(b"tyk.")]  # SUB filters the rest
    # a filtered message of 'evil' never reaches the worker: its seq is a gap, honestly counted lost
    filtered = len(catalogue) - len(cases)
    expected_rejected: dict[str, int] = {}
    for _, _, reason, count in cases:
        expected_rejected[reason.value] = expected_rejected.get(reason.value, 0) + count
    good_records = 0
    try:
        assert publisher.wait_for_subscribers(30)
        for i in range(100):
            publisher.publish("tyk.analytics", [analytics(time.time_ns(), api=f"api{i % 3}")] * 5)
            good_records += 5
            if i == 50:
                publisher.nodes["good"].seq += 7  # seven messages lost on the way
            if i < len(cases):
                publisher.socket.send_multipart(cases[i][1])
        for _ in range(10):  # the sender's clock is ahead of the worker's: clamped and counted
            publisher.publish("tyk.analytics", [analytics(time.time_ns())], sent=time.time_ns() + 5 * 10**9)
            good_records += 1
        deadline = time.monotonic() + 60
        while ingestor.stats.messages < 110 or ingestor.stats.rejected_total < sum(
            expected_rejected.values()
        ):
            assert time.monotonic() < deadline, (ingestor.stats, expected_rejected)
            time.sleep(0.05)
        metrics = scrape(server.port)
        while (
            metrics[("tykpulse_records_received_total", ())] < good_records
            or metrics[("tykpulse_flush_seconds_count", ())] < 1
            or watch.pending_flushes
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
            metrics = scrape(server.port)
        status_code, health = get(f"http://127.0.0.1:{server.port}/healthz")
        _, status_body = get(f"http://127.0.0.1:{server.port}/status")
    finally:
        stop.set()
        thread.join(60)
        publisher.close(0)
        server.close()
        sink.close()
    assert result
    assert metrics[("tykpulse_records_received_total", ())] == good_records
    assert metrics[("tykpulse_lost_messages_total", ())] == 7 + filtered
    for reason_label, count in expected_rejected.items():
        assert metrics[("tykpulse_rejected_total", (("reason", reason_label),))] == count
    assert metrics[("tykpulse_flush_seconds_count", ())] >= 1
    assert metrics[("tykpulse_flushes_total", (("outcome", "written"),))] >= 1
    assert (
        "tykpulse_publisher_last_seen_age_seconds",
        (("boot", str(publisher.nodes["good"].boot)), ("node", "good")),
    ) in metrics
    assert metrics[("tykpulse_queue_capacity", ())] == worker.max_pending_records
    assert status_code == 200, health
    status = json.loads(status_body)
    assert status["healthy"] is True
    publishers = {p["node"]: p for p in status["publishers"]}
    assert sorted(publishers) == ["evil", "good"]
    assert publishers["good"]["lost"] == 7
    assert publishers["good"]["state"] == "live"

    check = ClickHouseSink(clickhouse)
    db = clickhouse.clickhouse_database
    try:
        (requests,) = check.query_rows(f"SELECT sum(requests) FROM {db}.traffic_1m")[0]
        rejections = dict(
            check.query_rows(f"SELECT reason, sum(rejected) FROM {db}.ingest_rejections_1m GROUP BY reason")
        )
        health_rows = check.query_rows(
            f"SELECT sum(messages), sum(lost_messages), sum(rejected), sum(delivery_negative), "
            f"max(delivery_p50_ms), max(delivery_p99_ms) FROM {db}.ingest_health_1m WHERE node_id = 'good'"
        )
        (hourly_negative,) = check.query_rows(f"SELECT sum(delivery_negative) FROM {db}.ingest_health_1h")[0]
        (all_messages,) = check.query_rows(f"SELECT sum(messages) FROM {db}.ingest_health_1m")[0]
    finally:
        check.close()
    assert requests == good_records  # not one good record lost to the hostile ones
    assert rejections == expected_rejected
    messages, lost, _, negative, p50, p99 = health_rows[0]
    assert (messages, lost, negative) == (110, 7, 10)
    assert hourly_negative == 10
    # hostile messages whose envelope was sound count as messages of their node ('evil')
    assert metrics[("tykpulse_messages_received_total", ())] == all_messages > 110
    assert 0 <= p50 <= p99 < 60_000  # milliseconds; loopback delivery, 0 for the clamped ones


def test_healthz_fails_when_flushes_stay_unwritten() -> None:
    watch = WorkerWatch(Ingestor(), healthy_flush_age_s=0.2)
    server = MetricsServer(watch, "127.0.0.1", 0).start()
    try:
        watch.settled(pending_flushes=0)
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
        watch.settled(pending_flushes=3)  # the sink keeps failing from here on
        deadline = time.monotonic() + 10
        while get(f"http://127.0.0.1:{server.port}/healthz")[0] != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        code, body = get(f"http://127.0.0.1:{server.port}/healthz")
        assert code == 503
        assert b"unwritten" in body
        watch.settled(pending_flushes=0)
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
        assert get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
    finally:
        server.close()
