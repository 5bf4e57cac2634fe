"""Soak: a worker process fed 1 M distinct API keys (an hour's worth of event time) with a 10x
burst keeps its resident memory under a stated bound, and accounts for every message.

The bound is what docs/operations.md promises for the defaults: the worker holds
at most one flush's worth of records (max_pending_records), distinct keys live in
ClickHouse's uniqCombined64 states (bounded per key), and the key-hash cache is
capped. This asserts a memory bound, not a speed: a slower machine sends the
same messages, only later.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Final

import clickhouse_connect
import pytest
import zmq

from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from tests.harness.processes import free_port

pytestmark = pytest.mark.integration

RSS_BOUND_MB: Final = 1_024
DISTINCT_KEYS: Final = 1_000_000
PER_MESSAGE: Final = 500
BASE_RATE: Final = 8_000  # events/s
BURST_RATE: Final = 10 * BASE_RATE
HOUR_NS: Final = 3600 * 10**9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def wait_for_status(port: int, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert worker.poll() is None, "the worker exited"
        try:
            status(port)
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        else:
            return


def last_message_counted(publisher: FirehosePublisher, metrics_port: int) -> bool:
    """Send a heartbeat, then wait (a few flushes) until the worker accounts for every message."""
    publisher.heartbeat()
    sent = publisher.nodes["soak"].seq
    for _ in range(25):
        (seen,) = [p for p in status(metrics_port)["publishers"] if p["node"] == "soak"]
        if seen["messages"] + seen["lost"] == sent:
            return True
        time.sleep(0.2)
    return False


def send(publisher: FirehosePublisher, start: int, count: int, rate: float, now_ns: int) -> None:
    """count events with distinct keys start.., paced to rate, stamped across the last hour."""
    began = time.monotonic()
    for offset in range(0, count, PER_MESSAGE):
        ids = range(start + offset, start + min(offset + PER_MESSAGE, count))
        records = [
            {
                "event": "RatelimitExceeded",
                "timestamp": now_ns - HOUR_NS + i * (HOUR_NS // DISTINCT_KEYS),
                "org_id": f"org{i % 20}",
                "api_id": f"api{i % 200}",
                "key": f"soak-key-{i:08d}",
            }
            for i in ids
        ]
        publisher.publish("tyk.event.RatelimitExceeded", records)
        publisher.maybe_heartbeat()
        ahead = (offset + PER_MESSAGE) / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)


def test_one_million_distinct_keys_with_a_burst_stay_under_the_rss_bound(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "pipelines.cli.main", "--log-level", "warning", "run",
            "--firehose", f"@tcp://127.0.0.1:{port}", "--clickhouse", dsn,
            "--metrics-port", str(metrics), "--drain-timeout-s", "1",
        ]
    )  # fmt: skip
    sampler = RssSampler(worker.pid)
    sampler.start()
    context: zmq.Context[Any] = zmq.Context()
    publisher = FirehosePublisher(context, [parse_endpoint(f"tcp://127.0.0.1:{port}")], node="soak")
    try:
        wait_for_status(metrics, worker)
        assert publisher.wait_for_subscribers(60)
        now = time.time_ns()
        base_1, burst, base_2 = 240_000, 400_000, DISTINCT_KEYS - 640_000
        send(publisher, 0, base_1, BASE_RATE, now)
        send(publisher, base_1, burst, BURST_RATE, now)
        send(publisher, base_1 + burst, base_2, BASE_RATE, now)
        deadline = time.monotonic() + 300
        while not last_message_counted(publisher, metrics):  # no trailing loss left unseen
            assert time.monotonic() < deadline
        sent = publisher.nodes["soak"].seq
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=300) == 0
    finally:
        sampler.done.set()
        publisher.close(0)
        context.destroy(linger=0)
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    print(f"worker peak RSS {sampler.peak:.0f} MB (bound {RSS_BOUND_MB} MB)")
    assert 0 < sampler.peak < RSS_BOUND_MB
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        messages, lost = client.query(
            "SELECT sum(messages), sum(lost_messages) FROM tykpulse.ingest_health_1m WHERE node_id = 'soak'"
        ).result_rows[0]
        hits, distinct = client.query(  # distinct keys across every hourly state, merged
            "SELECT sum(hits), uniqCombined64Merge(distinct_keys) FROM tykpulse.rate_limit_hits_1h_state"
        ).result_rows[0]
    finally:
        client.close()
    assert messages + lost == sent
    events_lost = DISTINCT_KEYS - hits
    assert events_lost <= lost * PER_MESSAGE
    assert abs(distinct - hits) <= 0.02 * hits
