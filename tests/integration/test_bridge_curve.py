"""The webhook bridge over CURVE: an admitted bridge key is counted, an unknown one never gets in.

`tykpulse run` binds with a ZAP allowlist holding only the bridge's public key;
`tykpulse bridge tyk-webhook` connects with its certificate. Tyk's posts are
counted in the rollups. A second bridge with a key the worker does not know
never sees a subscriber, so it answers Tyk 503 rather than taking events it
could not deliver.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import clickhouse_connect
import pytest

from tests.harness.processes import free_port, stop_process
from tests.harness.tykpulse import tykpulse
from tests.tyk_webhooks import go_time_string, render

pytestmark = pytest.mark.integration

EVENTS = 25


def post(port: int, body: bytes, query: str = "org_id=org-curve&api_id=api-curve") -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/tyk/events?{query}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_an_admitted_bridge_is_counted_and_an_unknown_key_is_kept_out(tmp_path: Path) -> None:
    keys, allow = tmp_path / "keys", tmp_path / "allow"
    for name in ("worker", "bridge", "rogue"):
        subprocess.run(
            tykpulse("keys", "generate", name, "--dir", str(keys)), capture_output=True, check=True
        )
    allow.mkdir()
    shutil.copy(keys / "bridge.key", allow)
    zmq_port, http_port, rogue_port = free_port(), free_port(), free_port()
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("worker", "bridge", "rogue")}

    def bridge(name: str, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            tykpulse(
                "bridge", "tyk-webhook", "--listen", f"127.0.0.1:{port}",
                "--publish", f"tcp://127.0.0.1:{zmq_port}", "--node", f"{name}-node",
                "--curve-secret-key", str(keys / f"{name}.key_secret"),
                "--curve-server-key", str(keys / "worker.key"),
            ),
            stdout=logs[name], stderr=subprocess.STDOUT,
        )  # fmt: skip

    worker = subprocess.Popen(
        tykpulse(
            "run", "--firehose", f"@tcp://127.0.0.1:{zmq_port}", "--clickhouse", dsn,
            "--flush-interval-s", "0.5", "--drain-timeout-s", "1", "--serve", f"127.0.0.1:{free_port()}",
            "--curve-secret-key", str(keys / "worker.key_secret"), "--curve-allow", str(allow),
        ),
        stdout=logs["worker"], stderr=subprocess.STDOUT,
    )  # fmt: skip
    admitted, rogue = bridge("bridge", http_port), bridge("rogue", rogue_port)
    try:
        deadline = time.monotonic() + 90
        while healthz(http_port) != 200:
            assert worker.poll() is None, "the worker exited while starting"
            assert admitted.poll() is None, "the bridge exited while starting"
            assert time.monotonic() < deadline, "the admitted bridge never saw the worker subscribe"
            time.sleep(0.1)
        now_ns = time.time_ns()
        statuses = [
            post(
                http_port,
                render("RatelimitExceeded", go_time_string(now_ns + i, 0, "UTC"), key=f"k{i}").encode(),
            )
            for i in range(EVENTS)
        ]
        assert statuses == [200] * EVENTS
        # the rogue bridge has had as long as the admitted one: it is still refused
        while (rogue_health := healthz(rogue_port)) == 0:  # not listening yet
            assert rogue.poll() is None, "the rogue bridge exited"
            assert time.monotonic() < deadline, "the rogue bridge never listened"
            time.sleep(0.1)
        assert rogue_health == 503
        assert post(rogue_port, render("RatelimitExceeded", go_time_string(now_ns, 0, "UTC")).encode()) == 503
        for process in (admitted, rogue, worker):
            assert stop_process(process, 60)
        assert worker.returncode == 0
    finally:
        for process in (admitted, rogue, worker):
            stop_process(process, 5)
        for log in logs.values():
            log.close()
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        hits = client.query(
            "SELECT sum(hits) FROM tykpulse.rate_limit_hits_1m WHERE org_id = 'org-curve'"
        ).result_rows[0][0]
        nodes = {row[0] for row in client.query("SELECT node_id FROM tykpulse.publishers").result_rows}
    finally:
        client.close()
    assert hits == EVENTS
    assert "bridge-node" in nodes
    assert "rogue-node" not in nodes
    text = b"".join((tmp_path / f"{name}.log").read_bytes() for name in logs).decode(errors="replace")
    for path in keys.iterdir():
        for line in path.read_text().splitlines():
            if "-key = " in line:
                assert line.split("=", 1)[1].strip().strip('"') not in text
