"""The Faust-path benchmark runs end to end (a smoke test, not a timed one).

`python -m bench.kafka_workers` on a small topic, one round: the local runner,
one worker owning an embedded database, one and two workers behind `db serve`.
Each run is checked against ground truth inside the benchmark (the views hold
every record of the topic); here, that every setup ran and reported sane figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import _kafka_tables

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"^kafka: faust_records_per_s=\d+ local_records_per_s=\d+ faust_local_ratio=[\d.]+ "
    r"two_worker_scaling=[\d.]+$"
)


def test_kafka_bench_smoke_runs_every_setup(tmp_path: Path) -> None:
    out = tmp_path / "kafka.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.kafka_workers", "--rounds", "1", "--records", "1500000",
         "--local-seconds", "1", "--flush-interval-s", "0.25", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert SUMMARY.match(done.stdout.strip().splitlines()[-1]), done.stdout
    assert "messages landed" in done.stderr  # progress while it drains
    report = json.loads(out.read_text())
    runs = {run["setup"]: run for run in report["runs"]}
    assert set(runs) == {"local", "faust-1", "faust-1-served", "faust-2-served"}
    for setup in ("faust-1", "faust-1-served", "faust-2-served"):
        run = runs[setup]
        assert run["records"] == 1_500_000
        assert 0 < run["timed_records"] <= run["records"]
        assert run["records_per_s"] > 0
        workers = [name for name in run["cores_busy"] if name.startswith("worker-")]
        assert len(workers) == run["workers"]
        assert all(run["cores_busy"][name] > 0 for name in workers)
        assert ("db" in run["cores_busy"]) == setup.endswith("-served")
        assert run["cpu_us_per_record"] > 0
    assert report["summary"]["faust_scaling"] > 0
    assert report["summary"]["faust_scaling_machine_bound"] > 0
    table = "\n".join(_kafka_tables(report))
    assert "| faust-2-served |" in table
