"""The worker end to end with and without the write-ahead log: throughput, loss, CPU.

    python bench/wal_worker.py --rate 100000 --duration 15
    python bench/wal_worker.py --rate 50000 --fsync always interval never

For each configuration: a `tykpulse run` process (embedded ClickHouse in a temp
dir) and a `tykpulse simulate --truth` process over tcp loopback. Reported:
records the simulator sent, records in traffic_1m, messages lost on the way
(ingest_health), the worker's CPU seconds (user+sys) and peak RSS. The two
processes share the machine's cores, as they do in `make run`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import clickhouse_connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tykpulse(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli.main", "--log-level", "warning", *args]


def run_once(tmp: Path, rate: float, duration: float, wal: list[str]) -> dict[str, float]:
    port = free_port()
    dsn = f"chdb://{tmp / 'clickhouse'}"
    worker = subprocess.Popen(
        tykpulse("run", "--firehose", f"@tcp://127.0.0.1:{port}", "--clickhouse", dsn, *wal)
    )
    subprocess.run(
        tykpulse(
            "simulate",
            "--connect",
            f"tcp://127.0.0.1:{port}",
            "--record-rate",
            str(rate),
            "--duration",
            str(duration),
            "--message-records",
            "100",
            "--truth",
            str(tmp / "truth.json"),
            "--wait-subscribers-s",
            "60",
            "--node",
            "bench",
        ),
        check=True,
        timeout=duration + 300,
    )
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(worker.pid, 0)
    worker.returncode = os.waitstatus_to_exitcode(status)
    shutdown_s = time.monotonic() - started
    truth = json.loads((tmp / "truth.json").read_text())
    client = clickhouse_connect.get_client(dsn=dsn)
    landed = client.query("SELECT sum(requests) FROM tykpulse.traffic_1m").result_rows[0][0]
    lost = client.query("SELECT sum(lost_messages) FROM tykpulse.ingest_health_1m").result_rows[0][0]
    client.close()
    return {
        "sent": truth["meta"]["sent_analytics"],
        "landed": int(landed or 0),
        "lost_messages": int(lost or 0),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "shutdown_s": shutdown_s,
        "exit": worker.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100_000, help="Analytics records per second.")
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--fsync", nargs="*", default=["interval"], help="WAL fsync policies to run.")
    args = parser.parse_args()
    configs = [("no WAL", ["--no-wal"])] + [(f"WAL {p}", ["--wal-fsync", p]) for p in args.fsync]
    print(f"rate={args.rate:.0f} records/s duration={args.duration:.0f}s batch=100")
    print(
        f"{'config':>14} {'sent':>9} {'landed':>9} {'lost msgs':>9} {'cpu s':>6} {'rss MB':>7} {'stop s':>6}"
    )
    for name, wal in configs:
        with tempfile.TemporaryDirectory(prefix="tykpulse-bench-") as tmp:
            r = run_once(Path(tmp), args.rate, args.duration, wal)
        print(
            f"{name:>14} {r['sent']:>9.0f} {r['landed']:>9.0f} {r['lost_messages']:>9.0f} "
            f"{r['cpu_s']:>6.1f} {r['rss_mb']:>7.0f} {r['shutdown_s']:>6.1f}"
        )


if __name__ == "__main__":
    main()
