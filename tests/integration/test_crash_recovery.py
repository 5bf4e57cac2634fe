"""The crash test: a worker SIGKILLed at 20 random points while two publishers send, restarted each time.

A publisher in this process sends a deterministic workload (tests.durability:
every message its own window of known size) over real ZeroMQ tcp to
`tykpulse run` processes with embedded ClickHouse and a write-ahead log. At
the end, for every publisher:

- every window in traffic_1m holds exactly its message's records (never
  twice, never part), and traffic_1h agrees;
- ingest_health counts exactly those messages and records;
- messages received + lost_messages == messages sent.

Messages in flight when the worker dies (socket buffers) are lost, as
PUB/SUB loses them, and must show up as lost_messages after the restart.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import zmq

from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from tests.durability import MINUTE_S, check_exact, records_of, traffic_by_window, window_of
from tests.harness.processes import free_port
from tests.helpers import analytics
from tests.integration.cli import start_worker

pytestmark = pytest.mark.integration

KILLS = 20
NODES = ("crash-a", "crash-b")
RATE_PER_NODE = 100  # messages per second


class WorkloadPublisher(threading.Thread):
    """Publishes the deterministic workload for NODES until stopped; counts subscriptions seen."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, base_s: int) -> None:
        super().__init__(name="crash-publisher", daemon=True)
        self.context = context
        self.endpoint = endpoint
        self.base_s = base_s
        self.stop = threading.Event()
        self.sent = dict.fromkeys(NODES, 0)
        self.subscriptions = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        publisher = FirehosePublisher(self.context, [parse_endpoint(self.endpoint)])
        publisher.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        for node in NODES:
            publisher.add_node(node, boot=1)
        try:
            # Messages sent before anyone listens are unknowable to a worker (the
            # first one it sees starts the sequence), so start with the first worker.
            while not self.subscriptions and not self.stop.is_set():
                self._count_subscriptions(publisher.socket)
                time.sleep(0.005)
            started = time.monotonic()
            while not self.stop.is_set():
                self._count_subscriptions(publisher.socket)
                due = int((time.monotonic() - started) * RATE_PER_NODE)
                while self.sent[NODES[0]] < due:
                    for node in NODES:
                        self._send(publisher, node)
                time.sleep(0.005)
        finally:
            # no goodbye: the ground truth here is the data messages this publisher numbered itself
            publisher.close(linger_ms=2_000, goodbye=False)

    def _send(self, publisher: FirehosePublisher, node: str) -> None:
        seq = self.sent[node]
        ts = window_of(self.base_s, seq) * 1_000_000_000 + 1_000_000
        records = [analytics(ts + i, org=node, api=f"api{i % 2}") for i in range(records_of(seq))]
        state = publisher.publish("tyk.analytics", records, node=node)
        assert state.seq == seq + 1
        self.sent[node] += 1

    def _count_subscriptions(self, socket: zmq.Socket[Any]) -> None:
        while socket.poll(0, zmq.POLLIN):
            if socket.recv()[:1] == b"\x01":
                self.subscriptions += 1


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def crash_worker(port: int, dsn: str, wal_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    # The workload's windows start a month back, past the default record-age bound.
    return start_worker(
        port,
        dsn,
        "--wal-dir",
        str(wal_dir),
        "--flush-interval-s",
        "0.2",
        "--drain-timeout-s",
        "1",
        "--max-past-s",
        str(40 * 86_400),
        log=log,
    )


def wait_subscribed(publisher: WorkloadPublisher, before: int, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while publisher.subscriptions <= before:
        assert worker.poll() is None, "the worker exited while starting"
        assert publisher.error is None, publisher.error
        assert time.monotonic() < deadline, "the worker never subscribed"
        time.sleep(0.02)


def test_sigkill_at_random_points_loses_nothing_received_and_counts_nothing_twice(
    tmp_path: Path, context: zmq.Context[Any]
) -> None:
    seed = int(os.environ.get("TYKPULSE_CRASH_SEED", str(random.SystemRandom().randrange(10**6))))
    rng = random.Random(seed)
    print(f"crash test seed={seed} (rerun with TYKPULSE_CRASH_SEED={seed})")
    port = free_port()
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    wal_dir = tmp_path / "wal"
    log = tmp_path / "worker.log"
    now = int(time.time())
    base_s = now - now % 3600 - 30 * 24 * 3600  # a month back: 43 200 windows before "now"
    publisher = WorkloadPublisher(context, f"tcp://127.0.0.1:{port}", base_s)
    publisher.start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(KILLS):
            before = publisher.subscriptions
            worker = crash_worker(port, dsn, wal_dir, log)
            wait_subscribed(publisher, before, worker)
            time.sleep(rng.uniform(0.05, 2.5))
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
        before = publisher.subscriptions
        worker = crash_worker(port, dsn, wal_dir, log)
        wait_subscribed(publisher, before, worker)
        time.sleep(1.5)
        publisher.stop.set()
        publisher.join(timeout=30)
        assert publisher.error is None, publisher.error
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        publisher.stop.set()
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()

    text = log.read_text()
    opens = re.findall(r"WAL open .* backlog_records=(\d+) inflight=(\S+)", text)
    assert len(opens) == KILLS + 1, "every start opened the log"
    replays = sum(int(backlog) > 0 for backlog, _ in opens)
    inflight = sum(flight != "None" for _, flight in opens)
    print(f"starts that replayed a backlog={replays} found a flush in flight={inflight}")
    assert replays >= KILLS // 2, "SIGKILL should usually leave unflushed records in the log"

    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        for node in NODES:
            windows = traffic_by_window(client, "tykpulse", node)
            received = {(w - base_s) // MINUTE_S for w in windows}
            sent = publisher.sent[node]
            assert received <= set(range(sent))
            assert len(received) > sent // 2, f"{node}: received {len(received)} of {sent}"
            assert check_exact(client, "tykpulse", node, base_s, received, sent) == []
            print(f"{node}: sent={sent} received={len(received)} lost={sent - len(received)}")
    finally:
        client.close()
