"""End to end: a publisher process at its maximum rate -> one consumer process -> embedded ClickHouse.

The consumer is `tykpulse run` (the real worker, unchanged) or one of the
baselines. Only records that land count: for tykpulse, what its views hold
(traffic requests + rate-limit hits). Every run is checked against ground
truth: the views equal the worker's received count and its ingest_health
view, and sent = received + lost for messages and records alike (the pool's
messages all carry `records_per_message` records, so lost data messages are
known exactly once lost heartbeats are taken out).

Rates are landed records / the publisher's sending time. Records still
queued when the publisher stops (at most the two high-water marks) land
after it and are counted too: `backlog_bound` is that upper bound as a
fraction of what landed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

import clickhouse_connect

from bench.workload import WorkloadShape
from pipelines.settings import WorkerSettings

# tykpulse-no-wal: the same worker with its write-ahead log off (--no-wal), to show what durability costs
DESIGNS: Final = ("tykpulse", "tykpulse-no-wal", "ceiling", "naive", "native")
WORKERS: Final = ("tykpulse", "tykpulse-no-wal")
_READY_TIMEOUT_S: Final = 120.0
_SUMMARY = re.compile(r"worker done messages=(\d+) records=(\d+) lost=(\d+) rejected=(\d+)")
# what "landed" means: records counted in the views (every workload record is a request or a rate-limit hit)
LANDED_SQL: Final = (
    "SELECT (SELECT sum(requests) FROM tykpulse.traffic_1m)"
    " + (SELECT sum(hits) FROM tykpulse.rate_limit_hits_1m)"
)
_HEALTH_SQL: Final = (
    "SELECT sum(messages), sum(records), sum(lost_messages), sum(rejected) FROM tykpulse.ingest_health_1m"
)


class BenchError(RuntimeError):
    """A benchmark run that did not produce a trustworthy measurement."""


@dataclasses.dataclass(frozen=True, slots=True)
class E2ESpec:
    design: str
    shape: WorkloadShape
    duration_s: float
    rate: float = 0.0  # records/s; 0 = as fast as possible
    flush_interval_s: float = WorkerSettings.model_fields["flush_interval_s"].default  # the worker's
    quiet_s: float = 1.0  # publisher's trailing heartbeats; consumers stop after this much silence

    @property
    def hwm(self) -> int:
        """~10 k records per side: the publisher waits rather than drops, so this only bounds the backlog."""
        return max(100, 10_000 // self.shape.records_per_message)


def count(client: Any, sql: str) -> int:
    """A query's single integer (clickhouse-connect types `command` as a union of its result kinds)."""
    return int(client.command(sql))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _consumer_command(spec: E2ESpec, endpoint: str, workdir: Path) -> tuple[list[str], str]:
    dsn = f"chdb://{workdir / 'clickhouse'}"
    if spec.design in WORKERS:
        command = [
            *("-m", "pipelines.cli.main", "--log-level", "info", "run"),
            *("--firehose", "@" + endpoint, "--clickhouse", dsn, "--rcvhwm", str(spec.hwm)),
            *("--flush-interval-s", str(spec.flush_interval_s), "--drain-timeout-s", str(spec.quiet_s)),
            *(("--wal-dir", str(workdir / "wal")) if spec.design == "tykpulse" else ("--no-wal",)),
        ]
        return [sys.executable, *command], "worker subscribed"
    command = ["-m", f"bench.baselines.{spec.design}", "--endpoint", endpoint, "--hwm", str(spec.hwm)]
    command += ["--quiet", str(spec.quiet_s)]
    command += ["--out", str(workdir / "consumer.json")]
    if spec.design != "ceiling":
        command += ["--clickhouse", dsn]
    return [sys.executable, *command], "ready"


def _wait_for(path: Path, marker: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if marker in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            msg = f"consumer exited before it was ready: {path.read_text(errors='replace')[-2000:]}"
            raise BenchError(msg)
        time.sleep(0.05)
    msg = f"consumer not ready within {_READY_TIMEOUT_S} s"
    raise BenchError(msg)


class PeakRss:
    """Samples a process's VmHWM (the peak of its own address space) while it runs.

    ru_maxrss (getrusage, wait4) cannot be used: Linux carries the parent's peak
    across fork and exec, so every child would report at least the parent's.
    """

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.peak_kb = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                lines = self.path.read_text().splitlines()
            except OSError:
                return
            for line in lines:
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            self._done.wait(0.05)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak_kb / 1024


def _stop(process: subprocess.Popen[bytes], rss: PeakRss) -> dict[str, float]:
    """SIGTERM, wait; the child's own CPU time (wait4) and peak RSS (sampled)."""
    process.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(process.pid, 0)
    exited = time.time()
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = rss.stop()
    if process.returncode != 0:
        msg = f"consumer exited with {process.returncode}"
        raise BenchError(msg)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": peak, "exited_unix_s": exited}


def publisher_command(spec: E2ESpec, endpoint: str, out: Path, node: str = "bench-0") -> list[str]:
    shape = spec.shape
    return [
        *(sys.executable, "-m", "bench.publisher", "--endpoint", endpoint, "--node", node),
        *("--records-per-message", str(shape.records_per_message), "--keys", str(shape.keys)),
        *("--encoding", shape.encoding, "--duration", str(spec.duration_s), "--rate", str(spec.rate)),
        *("--hwm", str(spec.hwm), "--tail", str(spec.quiet_s), "--out", str(out)),
    ]


def run_e2e(spec: E2ESpec, partitions: int = 1) -> dict[str, Any]:
    """One run of one design; raises BenchError when the ground truth does not hold.

    With several partitions, each has its own publisher (a node) and consumer
    process (its own ClickHouse directory): the firehose split by source.
    """
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.design}-") as tmp:
        dirs = [Path(tmp) / f"p{i}" for i in range(partitions)]
        consumers: list[subprocess.Popen[bytes]] = []
        try:
            endpoints = [_start_consumer(spec, d, consumers) for d in dirs]
            samplers = [PeakRss(c.pid) for c in consumers]
            publishers = [
                subprocess.Popen(publisher_command(spec, e, d / "sent.json", f"bench-{i}"))
                for i, (e, d) in enumerate(zip(endpoints, dirs, strict=True))
            ]
            if any(p.wait() != 0 for p in publishers):
                msg = "a publisher failed"
                raise BenchError(msg)
            usages = [_stop(c, r) for c, r in zip(consumers, samplers, strict=True)]
        finally:
            for consumer in consumers:
                if consumer.poll() is None:
                    consumer.kill()
                    consumer.wait()
        results = [
            _result(spec, json.loads((d / "sent.json").read_text()), _consumer_result(spec, d), u)
            for d, u in zip(dirs, usages, strict=True)
        ]
    return _combine(results)


def _start_consumer(spec: E2ESpec, workdir: Path, started: list[subprocess.Popen[bytes]]) -> str:
    workdir.mkdir()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    command, marker = _consumer_command(spec, endpoint, workdir)
    log_path = workdir / "consumer.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    started.append(process)
    _wait_for(log_path, marker, process)
    return endpoint


def _consumer_result(spec: E2ESpec, workdir: Path) -> dict[str, Any]:
    if spec.design in WORKERS:
        return _tykpulse_result(workdir / "consumer.log", workdir / "clickhouse")
    result: dict[str, Any] = json.loads((workdir / "consumer.json").read_text())
    return result


def _combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    if len(results) == 1:
        return {**results[0], "partitions": 1}
    combined = dict(results[0])
    for key in ("sent_records", "received_records", "landed_records", "lost_data_messages", "lost_records"):
        combined[key] = sum(r[key] for r in results)
    for key in ("records_per_s", "sent_records_per_s", "consumer_cpu_s", "peak_rss_mb"):
        combined[key] = sum(r[key] for r in results)
    combined["duration_s"] = max(r["duration_s"] for r in results)
    combined["loss_fraction"] = combined["lost_records"] / combined["sent_records"]
    combined["backlog_bound"] = max(r["backlog_bound"] for r in results)
    combined["partitions"] = len(results)
    return combined


def _tykpulse_result(log_path: Path, clickhouse: Path) -> dict[str, Any]:
    match = _SUMMARY.search(log_path.read_text(errors="replace"))
    if match is None:
        msg = "no summary line in the worker's log"
        raise BenchError(msg)
    messages, records, lost, rejected = map(int, match.groups())
    client = clickhouse_connect.get_client(dsn=f"chdb://{clickhouse}")
    try:
        landed = count(client, LANDED_SQL)
        health = [int(v) for v in client.query(_HEALTH_SQL).result_rows[0]]
    finally:
        client.close()
    if health != [messages, records, lost, rejected]:
        msg = (
            f"ingest_health {health} disagrees with the worker's count {[messages, records, lost, rejected]}"
        )
        raise BenchError(msg)
    return {"messages": messages, "records": records, "lost": lost, "rejected": rejected, "landed": landed}


def check_ground_truth(sent: dict[str, Any], got: dict[str, Any], per_message: int) -> dict[str, int]:
    """Every record sent either landed or was lost in a counted gap; nothing else."""
    if got.get("rejected", 0):
        msg = f"{got['rejected']} rejections on a clean workload"
        raise BenchError(msg)
    if got["landed"] != got["records"]:
        msg = f"views hold {got['landed']} records, the consumer received {got['records']}"
        raise BenchError(msg)
    data_received = got["records"] // per_message
    lost_data = sent["data_messages"] - data_received
    lost_heartbeats = sent["heartbeats"] - (got["messages"] - data_received)
    if got["records"] % per_message or lost_data < 0 or lost_heartbeats < 0:
        msg = f"received more than was sent: sent={sent} got={got}"
        raise BenchError(msg)
    # Messages after the last one a consumer received cannot show as gaps. The
    # publisher ends with heartbeats only, so as long as the unseen ones are no
    # more than those, every data message was received or counted lost.
    unseen = lost_data + lost_heartbeats - got["lost"]
    if not 0 <= unseen <= sent.get("tail_heartbeats", 0):
        msg = f"uncounted loss: sent={sent} got={got} (lost data {lost_data} + heartbeats {lost_heartbeats})"
        raise BenchError(msg)
    return {"lost_data_messages": lost_data, "lost_records": lost_data * per_message}


def _result(
    spec: E2ESpec, sent: dict[str, Any], got: dict[str, Any], usage: dict[str, float]
) -> dict[str, Any]:
    per_message = spec.shape.records_per_message
    losses = check_ground_truth(sent, got, per_message)
    # A consumer that keeps a backlog (the write-ahead log takes messages faster than
    # they are aggregated) is still landing records after the publisher stops: its time
    # runs until it exits, less the silence every consumer waits for before stopping.
    finishing = max(0.0, usage["exited_unix_s"] - sent["tail_ended_unix_s"] - spec.quiet_s)
    elapsed = sent["elapsed_s"] + finishing
    backlog = 2 * spec.hwm * per_message
    return {
        "design": spec.design,
        "records_per_message": per_message,
        "keys": spec.shape.keys,
        "duration_s": elapsed,
        "finishing_s": finishing,
        "sent_records": sent["records"],
        "received_records": got["records"],
        "landed_records": got["landed"],
        **losses,
        "records_per_s": got["landed"] / elapsed,
        "sent_records_per_s": sent["records"] / elapsed,
        "loss_fraction": losses["lost_records"] / sent["records"] if sent["records"] else 0.0,
        "backlog_bound": backlog / got["landed"] if got["landed"] else 0.0,
        "consumer_cpu_s": usage["cpu_s"],
        "peak_rss_mb": usage["peak_rss_mb"],
    }
