"""A worker serving an embedded database seeded by the simulator, for the analyst-facing tests.

Session-scoped: `tykpulse run` (serving its database on a free loopback port)
ingests two hours of simulated event time, replayed 450x faster than real time
(`--time-scale`), with a rate-limit storm on one API, token waves and a token
burst, config bursts and a bad config change followed by 5xx; then a garbage
message and a publisher with a sequence gap (two lost messages). Notebooks,
dashboards, alert rules and the analyst API then read it over http while the
worker keeps running, as an analyst would.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.harness.processes import free_port, stop_process
from tests.harness.tykpulse import http_get, tykpulse, wait_until
from tests.helpers import message

SIMULATED_WALL_S = 16
TIME_SCALE = 450  # 16 s of wall time -> 2 h of event time
STORM_AT_S, STORM_FOR_S, STORM_SHARE = 7, 4, 0.3
TOKEN_BURST_AT_S = 4
INCIDENT_AT_S, INCIDENT_FOR_S = 12.5, 1.5


@dataclasses.dataclass(frozen=True)
class SeededDatabase:
    dsn: str
    truth: dict[str, Any]
    path: Path

    @property
    def storm(self) -> dict[str, Any]:
        return dict(self.truth["meta"]["storm"])

    @property
    def incident(self) -> dict[str, Any]:
        return dict(self.truth["meta"]["incident"])


def simulate_args(port: int, truth: Path) -> list[str]:
    return tykpulse(
        "simulate",
        "--connect",
        f"tcp://127.0.0.1:{port}",
        "--duration",
        str(SIMULATED_WALL_S),
        "--time-scale",
        str(TIME_SCALE),
        "--record-rate",
        "2000",
        "--seed",
        "11",
        "--token-wave-every-s",
        "0.2",
        "--config-burst-every-s",
        "0.5",
        "--storm-api-share",
        str(STORM_SHARE),
        "--storm-at-s",
        str(STORM_AT_S),
        "--storm-for-s",
        str(STORM_FOR_S),
        "--token-burst-at-s",
        str(TOKEN_BURST_AT_S),
        "--incident-at-s",
        str(INCIDENT_AT_S),
        "--incident-for-s",
        str(INCIDENT_FOR_S),
        "--truth",
        str(truth),
        "--wait-subscribers-s",
        "60",
        "--node",
        "sim",
    )


GAPPY_NODE = "gappy"  # publishes seq 0, 1, 4: two messages lost
GARBAGE_FRAMES = [b"tyk.analytics", b"not an envelope", b"x"]


def publish_bad_input(port: int) -> None:
    """A garbage message and a sequence gap, the way a broken publisher would send them."""
    context: zmq.Context[Any] = zmq.Context()
    xpub = context.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 2000)
    try:
        xpub.connect(f"tcp://127.0.0.1:{port}")
        # XPUB hears the worker's subscription: once it has, nothing sent is dropped
        assert xpub.poll(30_000), "the worker never subscribed"
        xpub.recv()
        xpub.send_multipart(GARBAGE_FRAMES)
        now = time.time_ns()
        for seq in (0, 1, 4):
            beat = {"node": GAPPY_NODE, "timestamp": now, "interval_ms": 1000}
            xpub.send_multipart(message("tyk.heartbeat", [beat], node=GAPPY_NODE, seq=seq, sent=now))
    finally:
        xpub.close()
        context.term()


@pytest.fixture(scope="session")
def seeded_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededDatabase]:
    tmp = tmp_path_factory.mktemp("seeded")
    firehose, serve = free_port(), free_port()
    worker = subprocess.Popen(
        tykpulse(
            "run",
            "--firehose",
            f"@tcp://127.0.0.1:{firehose}",
            "--clickhouse",
            f"chdb://{tmp / 'clickhouse'}",
            "--flush-interval-s",
            "0.5",
            "--serve",
            f"127.0.0.1:{serve}",
        )
    )
    dsn = f"http://127.0.0.1:{serve}"
    try:
        subprocess.run(simulate_args(firehose, tmp / "truth.json"), timeout=300, check=True)
        publish_bad_input(firehose)
        truth = json.loads((tmp / "truth.json").read_text())
        sent = sum(p["messages"] for p in truth["publishers"].values()) + 3  # + the gappy node's
        query = urllib.parse.quote(
            "SELECT sum(messages), sum(lost_messages), sum(rejected) > 0 FROM tykpulse.ingest_health_1m"
        )
        landed = f"{sent}\t2\t1\n".encode()
        wait_until(lambda: http_get(f"{dsn}/?query={query}") == landed, "the seeded rollups to land")
        yield SeededDatabase(dsn, truth, tmp / "clickhouse")
    finally:
        stop_process(worker, timeout=60)
