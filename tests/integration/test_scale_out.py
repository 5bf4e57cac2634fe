"""The scale-out path end to end on real parts, checked against the simulator's ground truth.

simulator -> proxy -> tykpulse bridge kafka -> Kafka (real broker, 4 partitions) -> two
`tykpulse worker` (Faust) processes -> `tykpulse db serve` (embedded ClickHouse behind its HTTP
interface). Each test runs the whole pipeline once and breaks one part mid-stream: a worker
SIGKILLed, the database process SIGKILLed and restarted, the bridge restarted.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from tests.harness.kafka.broker import KafkaBroker
from tests.harness.processes import free_port
from tests.integration.scaleout import Processes, ingest_health, view_mismatches, wait_until, worker_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
PASSWORD = "scale-out-test"


class Pipeline:
    """One scale-out deployment on loopback, every process started and stopped by the test."""

    def __init__(self, tmp: Path, broker: KafkaBroker, topic: str) -> None:
        self.tmp = tmp
        self.broker = broker
        self.topic = topic
        self.procs = Processes(tmp)
        self.db_port, self.front, self.back = free_port(), free_port(), free_port()
        self.metrics_ports = {"worker-a": free_port(), "worker-b": free_port()}
        self.dsn = f"http://tykpulse:{PASSWORD}@127.0.0.1:{self.db_port}"
        self.truth_path = tmp / "truth.json"

    def start_db(self) -> None:
        """`tykpulse db serve` (the analysts issue's endpoint) owns the embedded database."""
        proc = self.procs.start(
            "db",
            "db",
            "serve",
            "--path",
            str(self.tmp / "clickhouse"),
            "--listen",
            f"127.0.0.1:{self.db_port}",
            "--writer-password",
            PASSWORD,
        )
        wait_until(lambda: proc.poll() is not None or self._db_answers(), "db serve to answer", 120)
        assert proc.poll() is None, f"tykpulse db serve exited:\n{self.procs.log('db')[-2000:]}"

    def _db_answers(self) -> bool:
        try:
            client = clickhouse_connect.get_client(dsn=self.dsn, connect_timeout=2)
        except Exception:
            return False
        client.close()
        return True

    def client(self) -> Any:
        return clickhouse_connect.get_client(dsn=self.dsn)

    def start_bridge(self) -> None:
        self.procs.start(
            "bridge",
            "bridge",
            "kafka",
            "--firehose",
            f"tcp://127.0.0.1:{self.back}",
            "--kafka",
            self.broker.bootstrap,
            "--topic",
            self.topic,
            "--drain-timeout-s",
            "1",
        )

    def start_worker(self, name: str) -> None:
        self.procs.start(
            name,
            "worker",
            "--kafka",
            self.broker.bootstrap,
            "--topic",
            self.topic,
            "--kafka-group",
            f"g-{self.topic}",
            "--clickhouse",
            self.dsn,
            "--metrics-port",
            str(self.metrics_ports[name]),
            "--session-timeout-s",
            "6",
            "--flush-interval-s",
            "0.5",
            "--worker-retry-max-s",
            "1",
        )

    def start(self) -> None:
        self.start_db()
        self.procs.start(
            "proxy",
            "proxy",
            "--frontend",
            f"@tcp://127.0.0.1:{self.front}",
            "--backend",
            f"@tcp://127.0.0.1:{self.back}",
        )
        self.start_bridge()
        for name in self.metrics_ports:
            self.start_worker(name)
        wait_until(
            lambda: self.owned() == {0, 1, 2, 3} and all(self.partitions(n) for n in self.metrics_ports),
            "both workers to share the 4 partitions",
            180,
        )

    def partitions(self, worker: str) -> set[int]:
        status = worker_status(self.metrics_ports[worker])
        return {int(p) for p in status["partitions"]} if status else set()

    def owned(self) -> set[int]:
        return set().union(*(self.partitions(n) for n in self.metrics_ports if n in self.procs.procs))

    def written(self, worker: str) -> int:
        status = worker_status(self.metrics_ports[worker])
        return int(status["written"]["messages"]) if status else 0

    def simulate(self, duration: float, seed: int) -> Any:
        return self.procs.start(
            "simulator",
            "simulate",
            "--connect",
            f"tcp://127.0.0.1:{self.front}",
            "--duration",
            str(duration),
            "--rate",
            "2000",
            "--batch",
            "50",
            "--gateways",
            "8",
            "--seed",
            str(seed),
            "--late-fraction",
            "0.03",
            "--token-wave-every-s",
            "1",
            "--config-burst-every-s",
            "1",
            "--truth",
            str(self.truth_path),
            "--wait-subscribers-s",
            "60",
            "--node",
            "sim",
        )

    def finish(self, simulator: Any) -> dict[str, Any]:
        assert simulator.wait(timeout=180) == 0
        self.procs.procs.pop("simulator")
        return dict(json.loads(self.truth_path.read_text()))

    def wait_landed(
        self, truth: dict[str, Any], *, lossless: bool = True
    ) -> dict[str, tuple[int, int, int, int]]:
        """Wait until every message sent is in ingest_health (as accepted, or as counted loss)."""
        sent = {node: p["messages"] for node, p in truth["publishers"].items()}

        def landed() -> dict[str, tuple[int, int, int, int]] | None:
            client = self.client()
            try:
                health = ingest_health(client)
            finally:
                client.close()
            counted = {node: h[0] + (0 if lossless else h[2]) for node, h in health.items()}
            return health if counted == sent else None

        return dict(wait_until(landed, "every message to land in ClickHouse", 180, every=1.0))

    def mismatches(self, truth: dict[str, Any]) -> list[str]:
        client = self.client()
        try:
            return view_mismatches(client, truth)
        finally:
            client.close()

    def close(self) -> None:
        self.procs.close()


@pytest.fixture
def pipeline(tmp_path: Path, kafka_broker: KafkaBroker, kafka_topic: str) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, kafka_broker, kafka_topic)
    try:
        p.start()
        yield p
    finally:
        p.close()


def assert_exact(pipeline: Pipeline, truth: dict[str, Any]) -> None:
    health = pipeline.wait_landed(truth)
    expected = {node: (p["messages"], p["records"], 0, 0) for node, p in truth["publishers"].items()}
    assert health == expected
    problems = pipeline.mismatches(truth)
    assert not problems, problems[:10]


def test_two_workers_share_the_partitions_and_the_views_are_exact(pipeline: Pipeline) -> None:
    truth = pipeline.finish(pipeline.simulate(8, seed=11))
    assert_exact(pipeline, truth)
    assert pipeline.written("worker-a") > 0
    assert pipeline.written("worker-b") > 0


def test_sigkill_of_a_worker_mid_stream_loses_and_doubles_nothing(pipeline: Pipeline) -> None:
    simulator = pipeline.simulate(14, seed=12)
    wait_until(lambda: pipeline.written("worker-b") > 50, "worker-b to write", 120)
    pipeline.procs.procs["worker-b"].send_signal(signal.SIGKILL)
    pipeline.procs.stop("worker-b")
    wait_until(
        lambda: pipeline.partitions("worker-a") == {0, 1, 2, 3}, "the survivor to take every partition", 120
    )
    truth = pipeline.finish(simulator)
    assert_exact(pipeline, truth)


def test_database_killed_and_restarted_mid_stream_stays_exact(pipeline: Pipeline) -> None:
    simulator = pipeline.simulate(14, seed=13)
    wait_until(lambda: pipeline.written("worker-a") + pipeline.written("worker-b") > 100, "flushes", 120)
    pipeline.procs.procs["db"].send_signal(signal.SIGKILL)
    pipeline.procs.stop("db")
    wait_until(
        lambda: "flush failed, retrying" in pipeline.procs.log("worker-a") + pipeline.procs.log("worker-b"),
        "a worker to notice the database is gone",
        60,
    )
    pipeline.start_db()
    truth = pipeline.finish(simulator)
    assert_exact(pipeline, truth)


def test_bridge_restart_shows_up_as_counted_gaps_only(pipeline: Pipeline) -> None:
    simulator = pipeline.simulate(20, seed=14)
    wait_until(lambda: pipeline.written("worker-a") + pipeline.written("worker-b") > 50, "flushes", 120)
    # SIGKILL, so the restart is at once (a SIGTERM drains until the firehose is quiet, which under
    # load takes its 10 s deadline) and whatever the bridge held unacknowledged is lost too.
    pipeline.procs.procs["bridge"].send_signal(signal.SIGKILL)
    pipeline.procs.stop("bridge")
    pipeline.start_bridge()
    truth = pipeline.finish(simulator)
    health = pipeline.wait_landed(truth, lossless=False)
    lost = sum(h[2] for h in health.values())
    assert lost > 0, "the bridge was down while the fleet published: messages must be missing"
    assert all(h[3] == 0 for h in health.values()), health  # nothing rejected, no duplicates
    for node, p in truth["publishers"].items():
        assert health[node][0] + health[node][2] == p["messages"], node
        assert health[node][1] <= p["records"]
    client = pipeline.client()
    try:
        landed = client.query(
            "SELECT (SELECT sum(requests) FROM tykpulse.traffic_1m)"
            " + (SELECT sum(hits) FROM tykpulse.rate_limit_hits_1m)"
            " + (SELECT sum(created + updated + deleted) FROM tykpulse.token_churn_1m)"
            " + (SELECT sum(changes) FROM tykpulse.config_changes_1m)"
        ).result_rows[0][0]
    finally:
        client.close()
    assert landed == sum(h[1] for h in health.values())  # every record accepted is in the views, once
