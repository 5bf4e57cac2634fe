"""ClickHouse unreachable for a whole run, and shutdown under it, through the real CLI.

`tykpulse run` is pointed at an http:// DSN where nothing listens while the
simulator publishes; it logs everything to its WAL. A SIGTERM then gives up
after --shutdown-timeout-s (exit 1), or a second SIGTERM exits at once
(exit 130); either way a worker started on the same WAL with embedded
ClickHouse drains it, and every view equals the simulator's ground truth.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import clickhouse_connect
import pytest

from pipelines.simulate.verify import check_all
from tests.harness.processes import free_port
from tests.integration.cli import simulate, start_worker

pytestmark = pytest.mark.integration


def worker(port: int, dsn: str, wal_dir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return start_worker(
        port,
        dsn,
        "--wal-dir",
        str(wal_dir),
        "--flush-interval-s",
        "0.3",
        "--drain-timeout-s",
        "1",
        "--sink-retry-max-s",
        "1",
        "--clickhouse-connect-timeout-s",
        "1",
        *extra,
        log=log,
    )


def wait_for(log: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.05)


def drain_into_embedded(tmp_path: Path, wal_dir: Path, log: Path) -> str:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    second = worker(free_port(), dsn, wal_dir, log)
    try:
        wait_for(log, "sink ready", second)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    return dsn


def verify(dsn: str, truth: Path) -> None:
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        checks = check_all(client, "tykpulse", json.loads(truth.read_text()))
    finally:
        client.close()
    bad = [(c.view, c.expected_rows, c.actual_rows, c.problems[:3]) for c in checks if not c.ok]
    assert bad == []


@pytest.mark.parametrize("stop", ["timeout", "second-sigterm"])
def test_a_run_with_clickhouse_down_is_written_by_the_next_start(tmp_path: Path, stop: str) -> None:
    port = free_port()
    wal_dir = tmp_path / "wal"
    log = tmp_path / "worker.log"
    truth = tmp_path / "truth.json"
    timeout = "2" if stop == "timeout" else "600"
    first = worker(port, f"http://127.0.0.1:{free_port()}", wal_dir, log, "--shutdown-timeout-s", timeout)
    try:
        simulate(port, truth, seed=11)
        wait_for(log, "the WAL keeps the data", first)
        first.send_signal(signal.SIGTERM)
        if stop == "timeout":
            assert first.wait(timeout=60) == 1, "unwritten records must make the exit status 1"
            assert "shutdown timeout: records stay in the WAL" in log.read_text()
        else:
            wait_for(log, "finishing (send again to exit at once)", first)
            time.sleep(0.5)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=30) == 130
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    dsn = drain_into_embedded(tmp_path, wal_dir, log)
    verify(dsn, truth)
