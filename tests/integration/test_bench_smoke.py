"""The benchmark suite runs end to end and prints its summary line (a smoke test, not a timed one).

`python -m bench smoke` does one short round of everything `make bench` does:
stages, tykpulse and the three baselines end to end (each run checked against
ground truth inside the suite), and the latency measurement. Figures are not
judged here, only that they are present and sane.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"^bench: e2e_records_per_s=(?P<rate>\d+) ceiling_ratio=(?P<ceiling>[\d.]+) "
    r"naive_ratio=(?P<naive>[\d.]+) native_ratio=(?P<native>[\d.]+) "
    r"p99_visible_s=(?P<p99>[\d.]+) peak_rss_mb=(?P<rss>\d+) cpu_per_record_us=(?P<cpu>[\d.]+)$"
)


def test_bench_smoke_prints_a_sane_summary_line(tmp_path: Path) -> None:
    env = {**os.environ, "TYKPULSE_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match, last
    figures = {k: float(v) for k, v in match.groupdict().items()}
    assert figures["rate"] > 1_000
    assert 0 < figures["ceiling"] < 5
    assert figures["naive"] > 0
    assert figures["native"] > 0
    assert 0 < figures["p99"] < 60
    assert 50 < figures["rss"] < 20_000
    assert 0 < figures["cpu"] < 1_000
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["machine"]["cores"] >= 1
    designs = {run["design"] for run in report["e2e"]}
    assert designs == {"tykpulse", "tykpulse-no-wal", "ceiling", "naive", "native"}
    assert all(run["landed_records"] == run["received_records"] for run in report["e2e"])
    assert (tmp_path / "latest.md").read_text().count("|") > 20
    summary = report["summary"]
    ceiling = summary["rates"]["ceiling"]["median"]
    # Receiving alone is the ceiling: receiving, decoding and aggregating must be slower.
    assert 0 < summary["one_core_bound_records_per_s"] < ceiling
    assert "One-core bound" in (tmp_path / "latest.md").read_text()
    assert "one-core bound" in done.stderr
    # the latency phase also measures a shorter flush interval at the same rate, CPU per record with it
    default, short = report["latency"], report["latency_short_flush"]
    assert short["flush_interval_s"] < default["flush_interval_s"]
    assert short["rate"] == default["rate"]
    assert 0 < short["p99_visible_s"] < 60
    assert 0 < short["cpu_per_record_us"] < 1_000
    assert f"every {short['flush_interval_s']:g} s: p99" in done.stderr
    assert "Flushing every" in (tmp_path / "latest.md").read_text()


def test_fixed_costs_reports_a_start_and_a_flush() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.fixed_costs", "--starts", "1", "--records", "2000", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    start = re.search(r"start: ([\d.]+) s of CPU until subscribed, ([\d.]+) s started", done.stdout)
    assert start, done.stdout
    until_subscribed, in_all = float(start.group(1)), float(start.group(2))
    assert 0 < until_subscribed <= in_all
    flush = re.search(
        r"flush of 2,000 records into (\d) rollups: (\d+) ms of CPU to compute, (\d+)", done.stdout
    )
    assert flush, done.stdout
    assert int(flush.group(1)) >= 2  # the bench workload has traffic, rate-limit hits, health, publishers
    assert int(flush.group(3)) > 0


def test_thread_cpu_names_the_workers_threads() -> None:
    """The per-thread breakdown of a real worker finds its named threads in the kernel's table."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.thread_cpu", "--duration", "9", "--warmup", "2", "--rate", "50000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    total = re.search(r"([\d,]+) records in the window, ([\d.]+) us of worker CPU per record", done.stdout)
    assert total, done.stdout
    assert int(total.group(1).replace(",", "")) > 0
    threads = dict(re.findall(r"^  (\S.*?)\s+([\d.]+) us/record$", done.stdout, re.MULTILINE))
    for name in ("wal-append", "receiver", "main (flushes)"):
        assert float(threads[name]) > 0, done.stdout
    assert sum(map(float, threads.values())) <= float(total.group(2)) + 0.01
