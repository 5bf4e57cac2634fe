"""The CLI end to end with CURVE everywhere: keys generate, proxy, worker, simulator, status, SIGHUP.

Separate processes over real tcp; keys from `tykpulse keys generate`; signed
notices verified with the node secret. Checked: everything the allowed
simulator sent is counted (against its ground truth), status reports it, a
revoked key is shut out after SIGHUP, and no key appears in any log.
"""

from __future__ import annotations

import functools
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import clickhouse_connect
import pytest

from tests.harness.processes import free_port
from tests.harness.tykpulse import tykpulse as harness_tykpulse

pytestmark = pytest.mark.integration
SECRET = "integration-node-secret"


tykpulse = functools.partial(harness_tykpulse, log_level="info")  # the log lines are read


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def wait_for(condition: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def key_strings(directory: Path) -> list[str]:
    return [
        line.split("=", 1)[1].strip().strip('"')
        for path in directory.iterdir()
        for line in path.read_text().splitlines()
        if "-key = " in line
    ]


def test_curve_pipeline_counts_everything_reports_status_and_revokes_on_sighup(tmp_path: Path) -> None:
    keys, allow = tmp_path / "keys", tmp_path / "allow"
    for name in ("proxy", "worker", "sim"):
        out = subprocess.run(
            tykpulse("keys", "generate", name, "--dir", str(keys)), capture_output=True, check=True
        )
        assert b"never share" in out.stdout
    allow.mkdir()
    shutil.copy(keys / "worker.key", allow)
    shutil.copy(keys / "sim.key", allow)
    front, back, metrics = free_port(), free_port(), free_port()
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    logs = {
        name: (tmp_path / f"{name}.log").open("wb") for name in ("proxy", "worker", "sim", "rogue", "status")
    }
    client_keys = ["--curve-server-key", str(keys / "proxy.key")]
    proxy = subprocess.Popen(
        tykpulse(
            "proxy", "--frontend", f"@tcp://127.0.0.1:{front}", "--backend", f"@tcp://127.0.0.1:{back}",
            "--curve-secret-key", str(keys / "proxy.key_secret"), "--curve-allow", str(allow),
        ),
        stderr=logs["proxy"], stdout=logs["proxy"],
    )  # fmt: skip
    worker = subprocess.Popen(
        tykpulse(
            "run", "--firehose", f"tcp://127.0.0.1:{back}", "--clickhouse", dsn, "--flush-interval-s", "0.5",
            "--drain-timeout-s", "1", "--metrics-port", str(metrics), "--node-secret", SECRET,
            "--curve-secret-key", str(keys / "worker.key_secret"), *client_keys,
        ),
        stderr=logs["worker"],
    )  # fmt: skip
    try:
        wait_for(lambda: status(metrics))
        simulate = [
            "simulate", "--connect", f"tcp://127.0.0.1:{front}", "--duration", "4", "--record-rate", "2000",
            "--config-burst-every-s", "1", "--node-secret", SECRET, *client_keys,
        ]  # fmt: skip
        subprocess.run(
            tykpulse(
                *simulate, "--node", "sim", "--truth", str(tmp_path / "truth.json"),
                "--wait-subscribers-s", "60", "--curve-secret-key", str(keys / "sim.key_secret"),
            ),
            stderr=logs["sim"], timeout=180, check=True,
        )  # fmt: skip
        truth = json.loads((tmp_path / "truth.json").read_text())
        expected = {node: p["messages"] for node, p in truth["publishers"].items()}
        wait_for(lambda: {p["node"]: p["messages"] for p in status(metrics)["publishers"]} == expected)
        shown = subprocess.run(
            [*tykpulse("status", "--url", f"http://127.0.0.1:{metrics}")], capture_output=True, timeout=60
        )
        assert shown.returncode == 0, shown
        assert b"healthy" in shown.stdout
        assert b"sim-gw01" in shown.stdout
        assert b"write-ahead log:" in shown.stdout
        # the write-ahead log (on by default) reports through the same endpoint
        wal = status(metrics)["wal"]
        assert wal["appended"] >= sum(expected.values())
        assert wal["backlog_records"] >= 0
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
            exported = response.read().decode()
        assert "tykpulse_wal_used_ratio" in exported
        assert 'tykpulse_wal_dropped_total{reason="full"} 0.0' in exported
        # revoke the simulator's key: remove it, SIGHUP the proxy; a new run with it gets nowhere
        (allow / "sim.key").unlink()
        proxy.send_signal(signal.SIGHUP)
        wait_for(lambda: b"rebound after key revocation" in (tmp_path / "proxy.log").read_bytes())
        subprocess.run(
            tykpulse(
                *simulate, "--node", "revoked", "--wait-subscribers-s", "3",
                "--curve-secret-key", str(keys / "sim.key_secret"),
            ),
            stderr=logs["rogue"], timeout=180, check=True,
        )  # fmt: skip
        assert b"no subscriber after" in (tmp_path / "rogue.log").read_bytes()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        for process in (worker, proxy):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for log in logs.values():
            log.close()
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        health = dict(
            # clickhouse_connect's rows are tuples (typed as Sequence): here (node_id, sum)
            cast(
                "Sequence[tuple[str, int]]",
                client.query(
                    "SELECT node_id, sum(messages) FROM tykpulse.ingest_health_1m GROUP BY node_id"
                ).result_rows,
            )
        )
        (changes,) = client.query("SELECT sum(changes) FROM tykpulse.config_changes_1m").result_rows[0]
        (rejected,) = client.query("SELECT sum(rejected) FROM tykpulse.ingest_health_1m").result_rows[0]
    finally:
        client.close()
    assert health == expected  # nothing from the revoked run, everything from the allowed one
    assert (
        changes == sum(r["changes"] for r in truth["views"]["config_changes_1m"]) > 0
    )  # signatures verified
    assert rejected == 0
    text = b"".join((tmp_path / f"{n}.log").read_bytes() for n in logs).decode(errors="replace")
    for key in key_strings(keys):
        assert key not in text
    assert SECRET not in text
    assert "fingerprint=" in text
