"""What a worker costs whatever its traffic: its start and each flush (issue #16's CPU per record).

    python -m bench.fixed_costs

- start: CPU of `tykpulse run` (log on, a fresh database) from exec until it reports
  "worker subscribed", and in all when it is stopped right then (nothing received);
- flush: CPU of one flush, the records of a `--records` second of bench traffic through the
  real Ingestor: building and computing the partial rollups, then the sink's inserts into
  embedded ClickHouse (each insert fans out into the views of every grain).

Both are paid whatever the rate: at R records/s, flushing every F seconds adds
flush CPU / (F * R) per record, and a run of N records carries start CPU / N.
CPU time is the process's (user + system), so the engine's own threads count.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import msgspec

from bench.machine import cpu_seconds
from bench.workload import MessagePool, WorkloadShape
from pipelines.firehose.protocol import PROTOCOL_VERSION, Envelope
from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink

_READY: Final = b"worker subscribed"


def start_cost(workdir: Path) -> dict[str, float]:
    """One `tykpulse run` started, and stopped once subscribed; CPU seconds until then and in all."""
    command = [sys.executable, "-m", "pipelines.cli.main", "--log-level", "info", "run"]
    command += ["--firehose", "@tcp://127.0.0.1:0", "--clickhouse", f"chdb://{workdir / 'ch'}"]
    command += ["--wal-dir", str(workdir / "wal"), "--drain-timeout-s", "0"]
    log_path = workdir / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while _READY not in log_path.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            msg = f"the worker did not start: {log_path.read_text(errors='replace')[-2000:]}"
            raise RuntimeError(msg)
        time.sleep(0.01)
    started = cpu_seconds(worker.pid)
    worker.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(worker.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        msg = f"the worker failed: {log_path.read_text(errors='replace')[-2000:]}"
        raise RuntimeError(msg)
    return {"start_cpu_s": started, "total_cpu_s": usage.ru_utime + usage.ru_stime}


def bench_messages(records: int, now: int) -> list[list[bytes]]:
    """`records` of the bench workload (100 per message) as the frames a worker receives."""
    pool = MessagePool(WorkloadShape(100, pool_records=records))
    pool.stamp_all(now)
    encode = msgspec.msgpack.Encoder().encode
    messages = []
    for seq, (topic, payload) in enumerate(zip(pool.topics, pool.views, strict=True)):
        envelope = encode(Envelope(PROTOCOL_VERSION, "fixed-costs", 1, seq, now, 100, "msgpack"))
        messages.append([topic, envelope, bytes(payload)])
        if len(messages) * 100 >= records:
            break
    return messages


def flush_cost(workdir: Path, records: int, rounds: int) -> dict[str, Any]:
    """CPU seconds of building + computing one flush and of its inserts, median of `rounds`."""
    now = time.time_ns()
    messages = bench_messages(records, now)
    sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=f"chdb://{workdir / 'ch'}"))
    compute_s, insert_s, tables = [], [], 0
    try:
        sink.setup()
        for round_ in range(rounds + 1):
            ingestor = Ingestor(clock=lambda: now)
            for frames in messages:
                ingestor.ingest(frames)
            before = time.process_time()
            partials = compute(ingestor.take())
            computed = time.process_time()
            sink.write(partials, f"fixed-costs/{round_}")
            if round_:  # the first round warms the engine up
                compute_s.append(computed - before)
                insert_s.append(time.process_time() - computed)
            tables = sum(1 for table in partials.values() if table.num_rows)
    finally:
        sink.close()
    return {
        "records": len(messages) * 100,
        "tables": tables,
        "compute_cpu_s": statistics.median(compute_s),
        "insert_cpu_s": statistics.median(insert_s),
    }


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--starts", type=int, default=3, help="workers started (median reported)")
    parser.add_argument("--records", type=int, default=100_000, help="records in the measured flush")
    parser.add_argument("--rounds", type=int, default=5, help="flushes measured (median reported)")
    args = parser.parse_args(argv)
    starts = []
    for _ in range(args.starts):
        with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
            starts.append(start_cost(Path(tmp)))
    start = statistics.median(s["start_cpu_s"] for s in starts)
    total = statistics.median(s["total_cpu_s"] for s in starts)
    print(f"start: {start:.2f} s of CPU until subscribed, {total:.2f} s started and stopped")
    with tempfile.TemporaryDirectory(prefix="bench-flush-") as tmp:
        flush = flush_cost(Path(tmp), args.records, args.rounds)
    print(
        f"flush of {flush['records']:,} records into {flush['tables']} rollups: "
        f"{1000 * flush['compute_cpu_s']:.0f} ms of CPU to compute, "
        f"{1000 * flush['insert_cpu_s']:.0f} ms to insert"
    )


if __name__ == "__main__":
    main()
