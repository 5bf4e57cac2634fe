"""The tykpulse command as the durability integration tests start it: worker and simulator processes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness.tykpulse import tykpulse as _tykpulse


def tykpulse(*args: str, log_level: str = "info") -> list[str]:
    """As tests.harness.tykpulse, logging at info: these tests read the worker's log lines."""
    return _tykpulse(*args, log_level=log_level)


def start_worker(
    port: int, dsn: str, *extra: str, log: Path | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """`tykpulse run` bound on a loopback port; output appended to `log` when given."""
    command = tykpulse("run", "--firehose", f"@tcp://127.0.0.1:{port}", "--clickhouse", dsn, *extra)
    if log is None:
        return subprocess.Popen(command, cwd=cwd)
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def simulate(port: int, truth: Path, *, seed: int, duration_s: float = 4, rate: float = 3000) -> None:
    """`tykpulse simulate --truth` into a worker on `port`, waiting for it to subscribe."""
    subprocess.run(
        tykpulse(
            "simulate",
            "--connect",
            f"tcp://127.0.0.1:{port}",
            "--duration",
            str(duration_s),
            "--record-rate",
            str(rate),
            "--message-records",
            "50",
            "--seed",
            str(seed),
            "--late-fraction",
            "0.03",
            "--token-wave-every-s",
            "1",
            "--config-burst-every-s",
            "1",
            "--truth",
            str(truth),
            "--wait-subscribers-s",
            "60",
            "--node",
            "sim",
            log_level="warning",
        ),
        timeout=120,
        check=True,
    )
