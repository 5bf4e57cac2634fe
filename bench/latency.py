"""Event-to-visible latency: record timestamp -> the record counted in a view.

The worker's ClickHouse is embedded and locked by its process, so the view
is polled from inside the worker process: this module runs the real
LocalRunner (as `tykpulse run` does) plus a thread that reads the landed
count every POLL_S and keeps (time, count) pairs. The publisher stamps every
message's records with its send time and writes those stamps; a message is
visible at the first poll whose count covers it (records arrive in order and
nothing is lost at 50 % of the maximum rate, which the ground-truth check
confirms). Latencies are therefore over-estimated by at most POLL_S.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.e2e import LANDED_SQL, BenchError, E2ESpec, check_ground_truth, free_port, publisher_command
from pipelines.cli.signals import stop_on_signals
from pipelines.runners.local import LocalRunner
from pipelines.settings import FirehoseSettings, WalSettings, WorkerSettings
from pipelines.wal.build import build_flusher
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink

POLL_S: Final = 0.05
_WARMUP_S: Final = 2.0


def _poll(sink: ClickHouseSink, stop: threading.Event, out: list[tuple[int, int]]) -> None:
    while not stop.wait(POLL_S):
        out.append((time.time_ns(), int(sink.client.command(LANDED_SQL) or 0)))


def serve(endpoint: str, dsn: str, hwm: int, flush_interval_s: float, out: Path) -> None:
    """Run the worker with a poller until SIGTERM; write polls and the worker's counts."""
    logging.basicConfig(level=logging.WARNING)
    stop = stop_on_signals()
    sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=dsn))
    sink.setup()
    firehose = FirehoseSettings(firehose=["@" + endpoint], rcvhwm=hwm)
    worker = WorkerSettings(flush_interval_s=flush_interval_s, drain_timeout_s=1.0)
    # with its write-ahead log, as `tykpulse run` runs by default
    wal_dir = Path(dsn.removeprefix("chdb://")).with_name("wal")
    journal = build_flusher(firehose, worker, WalSettings(), sink, directory=wal_dir)
    runner = LocalRunner(firehose, worker, sink, ingestor=journal.ingestor, journal=journal)
    polls: list[tuple[int, int]] = []
    polling = threading.Event()
    poller = threading.Thread(target=_poll, args=(sink, polling, polls), daemon=True)
    poller.start()
    print("ready", flush=True)
    try:
        summary = runner.run(stop)
    finally:
        polling.set()
        poller.join()
    final = int(sink.client.command(LANDED_SQL))
    sink.close()
    report = {
        # the whole process (startup, worker threads, the poller): to compare flush intervals in one run
        "cpu_s": time.process_time(),
        "polls": polls,
        "messages": summary.messages,
        "records": summary.records,
        "lost": summary.lost,
        "rejected": sum(summary.rejected.values()),
        "landed": final,
    }
    out.write_text(json.dumps(report))


def measure(spec: E2ESpec) -> dict[str, Any]:
    """Publisher at spec.rate -> in-process worker + poller; latency percentiles in seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "bench.latency", "--endpoint", endpoint]
        command += ["--clickhouse", f"chdb://{workdir / 'ch'}", "--hwm", str(spec.hwm)]
        command += ["--flush-interval-s", str(spec.flush_interval_s), "--out", str(workdir / "polls.json")]
        log_path = workdir / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(log_path, worker)
            publish = publisher_command(spec, endpoint, workdir / "sent.json")
            subprocess.run([*publish, "--timeline", str(workdir / "stamps.npy")], check=True)
            worker.terminate()
            if worker.wait(timeout=120) != 0:
                msg = f"latency worker failed: {log_path.read_text()[-2000:]}"
                raise BenchError(msg)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        got = json.loads((workdir / "polls.json").read_text())
        sent = json.loads((workdir / "sent.json").read_text())
        stamps = np.load(workdir / "stamps.npy")
    check_ground_truth(sent, got, spec.shape.records_per_message)
    return {
        **_percentiles(stamps, got["polls"], spec),
        "flush_interval_s": spec.flush_interval_s,
        "cpu_per_record_us": got["cpu_s"] / got["landed"] * 1e6 if got["landed"] else 0.0,
    }


def _wait_ready(log_path: Path, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while "ready" not in log_path.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            msg = f"latency worker not ready: {log_path.read_text(errors='replace')[-2000:]}"
            raise BenchError(msg)
        time.sleep(0.05)


def _percentiles(stamps: np.ndarray, polls: list[list[int]], spec: E2ESpec) -> dict[str, Any]:
    per_message = spec.shape.records_per_message
    poll_times = np.array([p[0] for p in polls], dtype=np.int64)
    poll_counts = np.array([p[1] for p in polls], dtype=np.int64)
    needed = (np.arange(stamps.size, dtype=np.int64) + 1) * per_message
    first_poll = np.searchsorted(poll_counts, needed, side="left")
    steady = stamps >= stamps[0] + int(_WARMUP_S * 1e9)
    seen = first_poll < poll_times.size
    if not seen[steady].all():
        msg = "some records never became visible while polling"
        raise BenchError(msg)
    latencies = (poll_times[first_poll[steady]] - stamps[steady]) / 1e9
    return {
        "rate": spec.rate,
        "records_per_message": per_message,
        "messages": int(steady.sum()),
        "p50_visible_s": float(np.percentile(latencies, 50)),
        "p99_visible_s": float(np.percentile(latencies, 99)),
        "max_visible_s": float(latencies.max()),
        "poll_s": POLL_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--clickhouse", required=True)
    parser.add_argument("--hwm", type=int, default=1000)
    parser.add_argument("--flush-interval-s", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    serve(args.endpoint, args.clickhouse, args.hwm, args.flush_interval_s, args.out)


if __name__ == "__main__":
    main()
