"""Where a busy worker's CPU goes, thread by thread, per record (issue #16).

    python -m bench.thread_cpu                       # 100 records/message, as fast as it goes
    python -m bench.thread_cpu --records-per-message 1 --rate 40000

Runs `tykpulse run` (log on, its defaults) fed by the bench publisher, and over
a steady window (after a warm-up, before the end; it opens and closes just after a
flush) reads every thread's CPU time from /proc/PID/task/*/stat and the records the
worker flushed from its /metrics. The total is the process's own CPU time
(/proc/PID/stat), which also holds the threads that started and ended inside the
window (the engine starts threads per query): they are listed as "threads ended
in the window", since /proc no longer shows them by name.
Threads are grouped by the name the kernel shows: tykpulse names its own
(wal-append, receiver; pipelines.observe.thread_names); the main thread, which
flushes, by its id (chDB renames the thread its queries run on); ZMQbg/* are
libzmq's, polars-* polars', the rest the ClickHouse engine's.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from bench.e2e import E2ESpec, free_port, publisher_command
from bench.machine import cpu_seconds
from bench.workload import WorkloadShape

_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (kernel name, user + system ticks) of every thread of `pid`."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, int(fields[11]) + int(fields[12]))
    return out


def records_taken(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tykpulse_records_received_total":
                return float(sample.value)
    msg = "the worker's /metrics has no tykpulse_records_received_total"
    raise RuntimeError(msg)


def after_a_flush(metrics_url: str, timeout_s: float = 30.0) -> float:
    """The records counter, read as soon as a flush has moved it."""
    start = records_taken(metrics_url)
    deadline = time.monotonic() + timeout_s
    while (now := records_taken(metrics_url)) == start:
        if time.monotonic() > deadline:
            msg = "no flush moved the worker's record count"
            raise RuntimeError(msg)
        time.sleep(0.01)
    return now


def measure(records_per_message: int, rate: float, duration_s: float, warmup_s: float) -> dict[str, float]:
    """CPU seconds per record by thread name (and 'total'), over the steady window."""
    spec = E2ESpec("tykpulse", WorkloadShape(records_per_message), duration_s, rate=rate)
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        workdir = Path(tmp)
        endpoint, metrics_port = f"tcp://127.0.0.1:{free_port()}", free_port()
        command = [sys.executable, "-m", "pipelines.cli.main", "run", "--firehose", "@" + endpoint]
        command += ["--clickhouse", f"chdb://{workdir / 'ch'}", "--wal-dir", str(workdir / "wal")]
        command += ["--rcvhwm", str(spec.hwm), "--metrics-port", str(metrics_port)]
        command += ["--runtime-dir", str(workdir / "run"), "--drain-timeout-s", "1"]
        log_path = workdir / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while b"worker subscribed" not in log_path.read_bytes():
                if worker.poll() is not None:
                    msg = f"the worker exited: {log_path.read_text(errors='replace')[-2000:]}"
                    raise RuntimeError(msg)
                time.sleep(0.05)
            publisher = subprocess.Popen(publisher_command(spec, endpoint, workdir / "sent.json"))
            time.sleep(warmup_s)
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            # the counter moves once per flush: the window opens and closes just after one
            taken_before = after_a_flush(metrics_url)
            before, process_before = thread_ticks(worker.pid), cpu_seconds(worker.pid)
            time.sleep(duration_s - warmup_s - 3.0)
            taken_after = after_a_flush(metrics_url)
            after, process_after = thread_ticks(worker.pid), cpu_seconds(worker.pid)
            if publisher.wait() != 0:
                msg = "the publisher failed"
                raise RuntimeError(msg)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=120)
    records = taken_after - taken_before
    if records <= 0:
        msg = "the worker took no records in the window"
        raise RuntimeError(msg)
    by_name: collections.Counter[str] = collections.Counter()
    for tid, (name, ticks) in after.items():
        if tid == worker.pid:  # chDB renames the thread that runs its queries: known by its id
            group = "main (flushes)"
        elif name in _OURS or name.startswith(_THEIRS):
            group = name
        else:
            group = "ClickHouse engine"
        by_name[group] += ticks - before.get(tid, (name, 0))[1]
    seconds = {name: ticks / _TICKS_PER_S for name, ticks in by_name.items()}
    process = process_after - process_before
    # threads that ended inside the window are in the process's time but in neither snapshot
    ended = process - sum(seconds.values())
    if ended * _TICKS_PER_S >= 0.5:
        seconds["threads ended in the window"] = ended
    per_record = {name: s / records for name, s in seconds.items()}
    per_record["total"] = process / records
    per_record["records"] = records
    return per_record


_OURS: Final = frozenset({"wal-append", "receiver"})
_THEIRS: Final = ("ZMQbg", "polars", "jemalloc")


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--records-per-message", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="records/s; 0: as fast as it goes")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds the publisher sends")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before the window opens")
    args = parser.parse_args(argv)
    result = measure(args.records_per_message, args.rate, args.duration, args.warmup)
    records = result.pop("records")
    total = result.pop("total")
    print(f"{records:,.0f} records in the window, {total * 1e6:.2f} us of worker CPU per record")
    for name, cost in sorted(result.items(), key=lambda item: -item[1]):
        if cost * 1e6 >= 0.005:
            print(f"  {name:20s} {cost * 1e6:6.3f} us/record")


if __name__ == "__main__":
    main()
