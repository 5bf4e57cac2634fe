"""Every long-running command, started as its own process, serves /metrics, /healthz and /status.

Each test starts one command with --metrics-port and a private --runtime-dir, finds its
endpoint through the file it announces there (what `tykpulse status` reads), gives it some
work, and scrapes: every metric family the command is declared to export
(pipelines.observe.metrics.COMMAND_FAMILIES) is in /metrics, the counters moved, /healthz is
200 and /status names the command. A clean stop removes the announcement.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import redis
import zmq
from clickhouse_connect.driver.exceptions import DatabaseError

from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.observe.metrics import COMMAND_FAMILIES
from tests.harness.alert_receiver import AlertReceiver
from tests.harness.kafka.broker import KafkaBroker
from tests.harness.observed import Samples, announced_url, get, scrape, status, value
from tests.harness.processes import Processes, free_port, listening_ports
from tests.harness.redis import RedisServer
from tests.harness.tykpulse import http_get, tykpulse, wait_for_endpoint, wait_until
from tests.helpers import analytics
from tests.integration.test_faust_worker import produce
from tests.integration.test_tyk_bridge import gateway_writes
from tests.tyk_webhooks import go_time_string, render

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


def start(procs: Processes, runtime: Path, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = procs.start(name, *args, "--metrics-port", str(free_port()), "--runtime-dir", str(runtime))
    return proc, announced_url(runtime, proc)


def check_endpoints(url: str, command: str) -> Samples:
    """/healthz 200, /status of `command`, and every family the command declares in /metrics."""
    assert get(url + "/healthz")[0] == 200
    current = status(url)
    assert (current["command"], current["healthy"]) == (command, True), current
    samples = scrape(url)
    assert value(samples, "tykpulse_info", command=command, version=current_version()) == 1
    assert value(samples, "tykpulse_healthy") == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)
    names = {name for name, _ in samples}
    for family in COMMAND_FAMILIES.get(command, ()):
        exported = family.name + ("_total" if family.kind == "counter" else "")
        assert exported in names, f"{command}: {exported} not exported"
    return samples


def current_version() -> str:
    from importlib.metadata import version

    return version("tykpulse")


def stopped_cleanly(procs: Processes, name: str, runtime: Path) -> None:
    pid = procs.procs[name].pid
    assert procs.stop(name) == 0, procs.log(name)
    assert not list(runtime.glob(f"*-{pid}.json")), "the announcement outlived the process"


def eventually(url: str, check: Any, what: str) -> Samples:
    found: list[Samples] = []

    def moved() -> bool:
        found.append(scrape(url))
        return bool(check(found[-1]))

    wait_until(moved, what, 120)
    return found[-1]


def test_simulate_counts_what_it_publishes(processes: Processes, tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    _, url = start(
        processes, tmp_path, "simulate", "simulate", "--bind", f"tcp://127.0.0.1:{free_port()}",
        "--duration", "0", "--rate", "2000", "--wait-subscribers-s", "0", "--truth", str(truth),
    )  # fmt: skip
    samples = eventually(
        url,
        lambda s: value(s, "tykpulse_simulate_records_sent_total", kind="analytics") >= 2000,
        "a second of analytics published",
    )
    check_endpoints(url, "simulate")
    stopped_cleanly(processes, "simulate", tmp_path)
    # the counts while it ran are a part of what it sent in all (its ground truth, written at the end)
    meta = json.loads(truth.read_text())["meta"]
    for kind in ("analytics", "events", "notices"):
        sent = value(samples, "tykpulse_simulate_records_sent_total", kind=kind)
        assert sent <= meta[f"sent_{kind}"], (kind, sent, meta)
    analytics_sent = value(samples, "tykpulse_simulate_records_sent_total", kind="analytics")
    assert analytics_sent >= 2000
    # 100 records a message: at least that many messages, plus events, notices and heartbeats
    assert value(samples, "tykpulse_simulate_messages_sent_total") >= analytics_sent / 100


def test_proxy_counts_what_it_forwards(processes: Processes, tmp_path: Path) -> None:
    front, back = free_port(), free_port()
    _, url = start(
        processes, tmp_path, "proxy", "proxy",
        "--frontend", f"@tcp://127.0.0.1:{front}", "--backend", f"@tcp://127.0.0.1:{back}",
    )  # fmt: skip
    check_endpoints(url, "proxy")
    context: zmq.Context[Any] = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.connect(f"tcp://127.0.0.1:{back}")
    sub.subscribe(b"")
    publisher = FirehosePublisher(context, [parse_endpoint(f"tcp://127.0.0.1:{front}")], node="p")
    try:
        assert publisher.wait_for_subscribers(30)
        publisher.publish("tyk.analytics", [analytics(time.time_ns())])
        assert sub.poll(10_000)
        samples = eventually(
            url,
            lambda s: value(s, "tykpulse_proxy_frames_total", side="backend", direction="out") >= 3,
            "frames forwarded to the worker side",
        )
    finally:
        publisher.close()
        sub.close(linger=0)
        context.term()
    assert value(samples, "tykpulse_proxy_frames_total", side="frontend", direction="in") >= 3
    assert value(samples, "tykpulse_proxy_bytes_total", side="backend", direction="out") > 0
    assert (
        value(samples, "tykpulse_proxy_frames_total", side="frontend", direction="out") >= 1
    )  # subscription
    stopped_cleanly(processes, "proxy", tmp_path)


def post(port: int, body: str, secret: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/tyk/events?org_id=o1&api_id=a1",
        data=body.encode(),
        headers={"Content-Type": "application/json", "X-Tykpulse-Secret": secret},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def subscriber(context: zmq.Context[Any], port: int) -> zmq.Socket[Any]:
    """A firehose subscriber on a publisher bound at `port` (bridges publish only while one listens)."""
    sub: zmq.Socket[Any] = context.socket(zmq.SUB)
    sub.connect(f"tcp://127.0.0.1:{port}")
    sub.subscribe(b"")
    return sub


def test_webhook_bridge_counts_accepted_and_rejected_events(processes: Processes, tmp_path: Path) -> None:
    listen, publish = free_port(), free_port()
    context: zmq.Context[Any] = zmq.Context()
    sub = subscriber(context, publish)
    try:
        _, url = start(
            processes, tmp_path, "webhook", "bridge", "tyk-webhook",
            "--listen", f"127.0.0.1:{listen}", "--secret", "s3cret", "--publish", f"@tcp://127.0.0.1:{publish}",
            "--key-hash-salt", "salt", "--flush-ms", "10",
        )  # fmt: skip
        check_endpoints(url, "bridge tyk-webhook")
        good = render(
            "RatelimitExceeded", go_time_string(time.time_ns()), key="k1", path="/x", origin="1.2.3.4"
        )
        wait_until(
            lambda: post(listen, good, "s3cret") == 200, "the webhook accepted (a subscriber seen)", 60
        )
        assert post(listen, good, "wrong") == 401
        assert sub.poll(10_000), "the event reached the firehose"
        samples = eventually(
            url, lambda s: value(s, "tykpulse_records_published_total") >= 1, "the accepted event published"
        )
    finally:
        sub.close(linger=0)
        context.term()
    assert value(samples, "tykpulse_webhook_events_accepted_total") == 1
    assert value(samples, "tykpulse_webhook_rejected_total", reason="unauthorized") == 1
    stopped_cleanly(processes, "webhook", tmp_path)


def test_tyk_bridge_counts_what_it_drains(
    processes: Processes, tmp_path: Path, redis_server: RedisServer
) -> None:
    url_redis = redis_server.url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url_redis)
    client.flushdb()
    gateway_writes(client)
    publish = free_port()
    context: zmq.Context[Any] = zmq.Context()
    sub = subscriber(context, publish)  # the bridge drains only while someone subscribes
    try:
        _, url = start(
            processes, tmp_path, "tyk", "bridge", "tyk",
            "--redis", url_redis, "--publish", f"@tcp://127.0.0.1:{publish}", "--key-hash-salt", "salt",
            "--no-notifications",
        )  # fmt: skip
        check_endpoints(url, "bridge tyk")
        samples = eventually(
            url, lambda s: value(s, "tykpulse_records_published_total") > 0, "records published"
        )
    finally:
        sub.close(linger=0)
        context.term()
        client.close()
    assert value(samples, "tykpulse_tyk_records_moved_total") > 0
    assert value(samples, "tykpulse_redis_errors_total") == 0
    stopped_cleanly(processes, "tyk", tmp_path)


def test_kafka_bridge_counts_what_it_produces(
    processes: Processes, tmp_path: Path, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    firehose = free_port()
    context: zmq.Context[Any] = zmq.Context()
    publisher = FirehosePublisher(context, [parse_endpoint(f"@tcp://127.0.0.1:{firehose}")], node="kb")
    try:
        _, url = start(
            processes, tmp_path, "bridge", "bridge", "kafka",
            "--firehose", f"tcp://127.0.0.1:{firehose}", "--kafka", kafka_broker.bootstrap,
            "--topic", kafka_topic,
        )  # fmt: skip
        check_endpoints(url, "bridge kafka")
        assert publisher.wait_for_subscribers(30)
        for _ in range(3):
            publisher.publish("tyk.analytics", [analytics(time.time_ns())])
        samples = eventually(
            url, lambda s: value(s, "tykpulse_kafka_messages_produced_total") >= 3, "messages produced"
        )
    finally:
        publisher.close()
        context.term()
    assert value(samples, "tykpulse_messages_received_total") >= 3
    assert value(samples, "tykpulse_lost_messages_total") == 0
    stopped_cleanly(processes, "bridge", tmp_path)


def test_faust_worker_counts_through_its_sensor(
    processes: Processes, tmp_path: Path, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    asyncio.run(produce(kafka_broker.bootstrap, kafka_topic, range(5)))
    proc, url = start(
        processes, tmp_path, "worker", "worker",
        "--kafka", kafka_broker.bootstrap, "--topic", kafka_topic, "--kafka-group", f"g-{kafka_topic}",
        "--clickhouse", f"chdb://{tmp_path / 'clickhouse'}", "--flush-interval-s", "0.5",
    )  # fmt: skip
    check_endpoints(url, "worker")
    # the capped endpoint is the worker's only listening port: Faust's own web server (no bound on
    # connections; idle ones took every descriptor the worker had) stays off
    assert listening_ports(proc.pid) == {int(url.rsplit(":", 1)[1])}
    samples = eventually(
        url,
        lambda s: (
            value(s, "tykpulse_flushes_total", outcome="written") > 0
            and value(s, "tykpulse_messages_received_total") >= 30
        ),
        "the produced messages written",
    )
    assert value(samples, "tykpulse_kafka_records_consumed_total") >= 1
    assert value(samples, "tykpulse_kafka_assigned_partitions") == 4
    assert value(samples, "tykpulse_rows_written_total") > 0
    assert value(samples, "tykpulse_flushes_total", outcome="dropped") == 0
    state = status(url)["state"]
    assert sorted(state["partitions"]) == ["0", "1", "2", "3"]
    assert sum(p["next_offset"] for p in state["partitions"].values()) == 30  # 5 seqs x 6 nodes
    stopped_cleanly(processes, "worker", tmp_path)


def status_listing(runtime: Path) -> subprocess.CompletedProcess[str]:
    """`tykpulse status` with no endpoint given: everything announced in `runtime`."""
    command = tykpulse("status", "--runtime-dir", str(runtime))
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_run_serves_the_endpoint_by_default_and_status_finds_everything(
    processes: Processes, tmp_path: Path
) -> None:
    firehose, served = free_port(), free_port()
    runtime = tmp_path / "runtime"
    run = processes.start(
        "run", "run", "--firehose", f"tcp://127.0.0.1:{firehose}", "--runtime-dir", str(runtime),
        "--clickhouse", f"chdb://{tmp_path / 'clickhouse'}", "--flush-interval-s", "0.5",
        "--serve", f"127.0.0.1:{served}",
    )  # fmt: skip
    url = announced_url(runtime, run)  # no --metrics-port: a free port, announced
    check_endpoints(url, "run")
    # the database the worker serves is counted in the worker's own /metrics
    wait_for_endpoint(served, run)
    assert http_get(f"http://127.0.0.1:{served}/?query=SELECT%201") == b"1\n"
    served_queries = eventually(
        url,
        lambda s: value(s, "tykpulse_serve_queries_total", role="reader", outcome="ok") >= 1,
        "the served query counted",
    )
    assert value(served_queries, "tykpulse_serve_errors_total", status="403") == 0
    _, proxy_url = start(
        processes, runtime, "proxy", "proxy",
        "--frontend", f"@tcp://127.0.0.1:{free_port()}", "--backend", f"@tcp://127.0.0.1:{free_port()}",
    )  # fmt: skip
    listing = subprocess.run(
        tykpulse("status", "--runtime-dir", str(runtime)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert f"run (pid {run.pid})" in listing.stdout
    assert "proxy healthy" in listing.stdout
    assert "worker healthy" in listing.stdout
    stopped_cleanly(processes, "proxy", runtime)
    (runtime / "proxy-999999999.json").write_text(
        json.dumps({"command": "proxy", "pid": 999_999_999, "url": proxy_url})
    )
    one = subprocess.run(
        tykpulse("status", "--runtime-dir", str(runtime)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert "proxy" not in one.stdout, "a dead process's announcement is skipped"
    assert not (runtime / "proxy-999999999.json").exists()
    stopped_cleanly(processes, "run", runtime)
    nothing = subprocess.run(
        tykpulse("status", "--runtime-dir", str(runtime)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert nothing.returncode == 2
    assert "no tykpulse command is running here" in nothing.stdout


def test_alerts_run_counts_evaluations_and_deliveries(
    processes: Processes, tmp_path: Path, alert_receiver: AlertReceiver
) -> None:
    runtime, port = tmp_path / "run", free_port()
    db = processes.start(
        "db", "db", "serve", "--path", f"chdb://{tmp_path / 'db'}", "--listen", f"127.0.0.1:{port}"
    )  # fmt: skip
    wait_for_endpoint(port, db)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "always.yaml").write_text(
        "name: always_one\nseverity: info\ninterval: 1s\nsql: SELECT 'x' AS series, 1 AS n\n"
    )
    _, url = start(
        processes, runtime, "alerts", "alerts", "run", "--rules", str(rules),
        "--clickhouse", f"http://127.0.0.1:{port}", "--webhook", alert_receiver.url,
    )  # fmt: skip
    samples = eventually(
        url,
        lambda s: (
            value(s, "tykpulse_alert_evaluations_total", outcome="ok") >= 2
            and value(s, "tykpulse_alerts_delivered_total") >= 1
        ),
        "two evaluations and a delivered alert",
    )
    check_endpoints(url, "alerts run")
    assert value(samples, "tykpulse_alert_evaluations_total", outcome="failed") == 0
    assert value(samples, "tykpulse_alerts_firing") == 1
    assert value(samples, "tykpulse_alert_delivery_failures_total") == 0
    received = [alert["labels"].get("alertname") for _, alert in alert_receiver.alerts()]
    assert "always_one" in received
    stopped_cleanly(processes, "alerts", runtime)


def test_db_serve_counts_statements_refusals_and_rows_written(processes: Processes, tmp_path: Path) -> None:
    runtime, port = tmp_path / "run", free_port()
    db, url = start(
        processes, runtime, "db", "db", "serve", "--path", f"chdb://{tmp_path / 'db'}",
        "--listen", f"127.0.0.1:{port}", "--writer-password", "s3cret",
    )  # fmt: skip
    wait_for_endpoint(port, db)
    writer = clickhouse_connect.get_client(
        host="127.0.0.1", port=port, username="tykpulse", password="s3cret"
    )
    writer.command("CREATE DATABASE IF NOT EXISTS tykpulse")
    writer.command("CREATE TABLE tykpulse.t (x UInt64) ENGINE = MergeTree ORDER BY x")
    writer.insert("tykpulse.t", [[1], [2], [3], [4]], column_names=["x"])
    reader = clickhouse_connect.get_client(host="127.0.0.1", port=port)
    assert reader.command("SELECT sum(x) FROM tykpulse.t") == 10
    with pytest.raises(DatabaseError):
        reader.command("SELECT * FROM file('/etc/hostname', 'RawBLOB')")
    samples = eventually(
        url, lambda s: value(s, "tykpulse_serve_rows_written_total") == 4, "the insert's rows counted"
    )
    check_endpoints(url, "db serve")
    assert value(samples, "tykpulse_serve_queries_total", role="writer", outcome="ok") >= 2
    assert value(samples, "tykpulse_serve_queries_total", role="reader", outcome="ok") >= 1
    assert value(samples, "tykpulse_serve_queries_total", role="reader", outcome="error") == 1
    assert value(samples, "tykpulse_serve_errors_total", status="403") == 1
    assert value(samples, "tykpulse_serve_errors_total", status="400") == 0
    assert value(samples, "tykpulse_serve_cancelled_total") == 0
    assert value(samples, "tykpulse_serve_replies_abandoned_total") == 0
    # the connection cap and readers' budget: the clients above, nothing closed or refused
    assert 1 <= value(samples, "tykpulse_serve_connections_peak") <= 256
    for reason in ("evicted", "refused", "head_timed_out"):
        assert value(samples, "tykpulse_serve_connections_closed_total", reason=reason) == 0
    assert value(samples, "tykpulse_serve_reader_in_flight_limit_bytes") == 512 << 20
    assert value(samples, "tykpulse_serve_reader_in_flight_peak_bytes") > 0
    assert value(samples, "tykpulse_serve_reader_budget_refused_total") == 0
    writer.close()
    reader.close()
    stopped_cleanly(processes, "db", runtime)


def test_a_worker_that_keeps_up_with_a_steady_firehose_stays_healthy(
    processes: Processes, tmp_path: Path
) -> None:
    # Found by attack: health waited for a flush tick to end with nothing unwritten, which a steady
    # firehose never allows (something arrives during every flush): a worker keeping up at 5,000
    # records/s turned unhealthy after --healthy-flush-age-s and a liveness probe would restart it.
    firehose = free_port()
    runtime = tmp_path / "runtime"
    run, url = start(
        processes, runtime, "run", "run", "--firehose", f"@tcp://127.0.0.1:{firehose}",
        "--clickhouse", f"chdb://{tmp_path / 'clickhouse'}", "--flush-interval-s", "0.25",
        "--healthy-flush-age-s", "2",
    )  # fmt: skip
    context: zmq.Context[Any] = zmq.Context()
    publisher = FirehosePublisher(context, [parse_endpoint(f"tcp://127.0.0.1:{firehose}")], node="steady")
    answers: list[int] = []
    try:
        assert publisher.wait_for_subscribers(60)
        started = time.monotonic()
        next_look = started + 3  # past the first flushes
        sent = 0
        while time.monotonic() - started < 9:
            publisher.publish("tyk.analytics", [analytics(time.time_ns()) for _ in range(5)])
            sent += 5
            if time.monotonic() >= next_look:
                answers.append(get(url + "/healthz")[0])
                next_look += 0.1
            time.sleep(0.001)
    finally:
        publisher.close()
        context.term()
    assert run.poll() is None, processes.log("run")
    assert len(answers) > 40
    assert set(answers) == {200}, answers
    landed = eventually(
        url, lambda s: value(s, "tykpulse_records_received_total") >= sent, "every record written"
    )
    assert value(landed, "tykpulse_records_received_total") == sent
