"""ClickHouse unreachable for a whole run, and shutdown under it, through the real CLI.

`tykpulse run` is pointed at an http:// DSN where nothing listens while the
simulator publishes; it logs everything to its WAL. A SIGTERM then gives up
after --shutdown-timeout-s (exit 1), or a second SIGTERM exits at once
(exit 130); either way a worker started on the same WAL with embedded
ClickHouse drains it, and every view equals the simulator's ground truth.

A worker started while its database is down (a deploy during an outage) runs,
says in `tykpulse status` that it waits for the database, and once
`tykpulse db serve` comes up on that port applies the schema and drains
everything it logged meanwhile, while still running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from pipelines.simulate.verify import check_all
from tests.harness.processes import free_port
from tests.harness.tykpulse import wait_for_endpoint, wait_until
from tests.integration.cli import simulate, start_worker, tykpulse

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


WRITER_PASSWORD = "writer-secret"


def db_serve(path: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        tykpulse(
            "db", "serve", "--path", str(path), "--listen", f"127.0.0.1:{port}",
            "--writer-password", WRITER_PASSWORD,
        )
    )  # fmt: skip
    wait_for_endpoint(port, server)
    return server


def status_of(metrics_port: int) -> str:
    done = subprocess.run(
        tykpulse("status", "--url", f"http://127.0.0.1:{metrics_port}"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.stdout.decode(errors="replace")


def landed(dsn: str, truth: Path) -> bool:
    """Every message the simulator sent is counted (False while the schema is not there yet)."""
    expected = sum(p["messages"] for p in json.loads(truth.read_text())["publishers"].values())
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        return bool(client.command("SELECT sum(messages) FROM tykpulse.ingest_health_1m") == expected)
    except DatabaseError:  # the view does not exist until the worker has applied the schema
        return False
    finally:
        client.close()


def test_a_worker_started_while_the_database_is_down_drains_when_it_comes_up(tmp_path: Path) -> None:
    port, db_port, metrics_port = free_port(), free_port(), free_port()
    log, truth = tmp_path / "worker.log", tmp_path / "truth.json"
    dsn = f"http://tykpulse:{WRITER_PASSWORD}@127.0.0.1:{db_port}"
    first = worker(
        port, dsn, tmp_path / "wal", log,
        "--sink-retry-initial-s", "0.2", "--metrics-port", str(metrics_port),
    )  # fmt: skip
    server = None
    try:
        wait_for(log, "the WAL keeps the data", first)  # started, and found nothing listening
        simulate(port, truth, seed=13)
        assert first.poll() is None
        assert "waiting for the database" in status_of(metrics_port)
        server = db_serve(tmp_path / "shared", db_port)
        reader = f"http://127.0.0.1:{db_port}"
        wait_until(lambda: landed(reader, truth), "the logged messages to be written")
        assert "waiting for the database" not in status_of(metrics_port)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0, log.read_text()[-3000:]
        verify(reader, truth)
    finally:
        for process in (first, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
