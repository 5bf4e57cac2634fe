"""The Faust path beside the local runner, on the same messages.

    python -m bench.kafka_workers                     # 3 rounds, ~4 min
    python -m bench.kafka_workers --rounds 1 --records 300000

A real broker (the test harness) gets a 4-partition topic filled with the
bench's MessagePool, the payloads `make bench` publishes to the local worker
(100 records each), as the bridge stores them: its producer settings,
compression and bundles (a node's messages received together share a Kafka
record), every node on one partition (8 nodes, two per partition). Each round then
drains that topic, in a consumer group and a database of its own, with:

- faust-1: one `tykpulse worker` that owns an embedded database (chdb://),
  the single-machine setup, compared with
- local: `tykpulse run` (durable, as `make bench` runs it) fed by the bench
  publisher over ZeroMQ from the same pool (bench.e2e);
- faust-1-served, faust-2-served: one and two workers writing to one
  `tykpulse db serve` over HTTP (how workers share an embedded database),
  whose ratio is the scaling.

The clock runs from the moment every partition is claimed by a worker that
holds it (the status endpoints; startup and group joins are not counted) to
the last landed flush, and counts the messages of the offsets that landed
(the fill knows how many each record carries), so a range redone after a
takeover counts once. Like the local runner's, it
includes filling the first chunk and writing the last. Every run is checked:
the views hold every record of the topic, exactly.

The CPU seconds of every process (broker, workers, database server) over the
measured interval give the cores each keeps busy and the CPU a record costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import clickhouse_connect
import msgspec
from aiokafka import AIOKafkaProducer

from bench.e2e import LANDED_SQL, BenchError, E2ESpec, count, run_e2e
from bench.machine import cpu_seconds
from bench.workload import MessagePool, WorkloadShape
from pipelines.firehose.kafka_record import read_envelope, to_records
from pipelines.firehose.protocol import PROTOCOL_VERSION, Envelope
from pipelines.settings import KafkaBridgeSettings
from tests.harness.kafka.broker import KafkaBroker
from tests.harness.processes import free_port, stop_process
from tests.integration.scaleout import worker_status

PARTITIONS: Final = 4
NODES: Final = 8  # two per partition, so that each of two workers gets the same share
PASSWORD: Final = secrets.token_urlsafe(16)  # this run's db serve writer
SETUPS: Final = ("faust-1", "faust-1-served", "faust-2-served")
_STALL_S: Final = 90.0  # no progress for this long: the run failed (its logs are shown)
_POLL_S: Final = 0.1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the topic ----------------------------------------------------------------------------


def _messages(pool: MessagePool, count: int) -> Iterator[tuple[int, list[bytes]]]:
    """(node index, frames) of `count` firehose messages, the nodes taking turns."""
    encode = msgspec.msgpack.Encoder().encode
    boot, seqs = time.time_ns() // 1_000_000, [0] * NODES
    sent = 0
    while True:
        pool.redraw_keys()
        pool.stamp_all(time.time_ns())
        for index, payload in enumerate(pool.views):
            if sent == count:
                return
            node = sent % NODES
            envelope = Envelope(
                PROTOCOL_VERSION, f"bench-{node}", boot, seqs[node], time.time_ns(),
                pool.shape.records_per_message, pool.shape.encoding,
            )  # fmt: skip
            seqs[node] += 1
            yield node, [pool.topics[index], encode(envelope), bytes(payload)]
            sent += 1


@dataclasses.dataclass(frozen=True, slots=True)
class Layout:
    """How many firehose messages each partition's records carry, cumulated by offset."""

    carried: dict[int, list[int]]  # partition -> [messages before offset 0, before offset 1, ...]

    def messages(self, landed_offsets: dict[int, int]) -> int:
        return sum(self.carried[p][n] for p, n in landed_offsets.items())

    @property
    def records(self) -> dict[int, int]:
        return {p: len(c) - 1 for p, c in self.carried.items()}


async def fill(
    bootstrap: str, topic: str, pool: MessagePool, messages: int, compression: str, bundle_messages: int
) -> Layout:
    """Produce as the bridge does: its producer settings, its bundles of a node's messages.

    The bridge bundles what it received together; here every 256 messages (32 per
    node) are taken as received together.
    """
    bridge = KafkaBridgeSettings()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=bridge.bridge_linger_ms,
        max_batch_size=bridge.bridge_batch_bytes,
        max_request_size=bridge.bridge_max_request_bytes,
        compression_type=None if compression == "none" else compression,
    )
    carried: dict[int, list[int]] = {p: [0] for p in range(PARTITIONS)}
    await producer.start()
    try:
        chunk: list[tuple[list[bytes], Envelope | None]] = []
        pending = []
        for index, (_, frames) in enumerate(_messages(pool, messages)):
            chunk.append((frames, read_envelope(frames[1])))
            if len(chunk) < 256 and index < messages - 1:
                continue
            for record, carried_here in to_records(chunk, bundle_messages, bridge.bundle_max_bytes):
                partition = int(record.key.decode().removeprefix("bench-")) % PARTITIONS
                carried[partition].append(carried[partition][-1] + len(carried_here))
                sent = await producer.send(
                    topic, record.value, key=record.key, headers=record.headers, partition=partition
                )
                pending.append(sent)
            chunk.clear()
            await asyncio.gather(*pending)
            pending.clear()
    finally:
        await producer.stop()
    return Layout(carried)


# -- processes and their CPU --------------------------------------------------------------


class Process:
    def __init__(self, name: str, command: list[str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("wb") as out:
            # from the round's own directory: a worker writing to `db serve` keeps its key file and
            # Faust's files under its working directory, which must not be the user's checkout
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=logs)

    def check(self) -> None:
        if self.proc.poll() is not None:
            msg = f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
            raise BenchError(msg)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.proc, 30)


def tykpulse(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli.main", "--log-level", "info", *args]


@dataclasses.dataclass(slots=True)
class Progress:
    """Offsets landed per partition (a range redone after a takeover counts once), workers holding some."""

    layout: Layout
    landed: dict[int, int] = dataclasses.field(default_factory=dict)
    holding: set[int] = dataclasses.field(default_factory=set)

    def observe(self, worker: int, status: dict[str, Any] | None) -> None:
        if not status:
            return
        if status["partitions"]:
            self.holding.add(worker)
        for partition, state in status["partitions"].items():
            landed = int(state["landed_offset"]) + 1
            self.landed[int(partition)] = max(self.landed.get(int(partition), 0), landed)

    @property
    def messages(self) -> int:
        return self.layout.messages(self.landed)

    @property
    def done(self) -> bool:
        return self.landed == self.layout.records

    def all_held(self, workers: int) -> bool:
        """Every worker holds partitions and every partition has been claimed (so is counted)."""
        return len(self.holding) == workers and len(self.landed) == PARTITIONS


# -- one setup ------------------------------------------------------------------------------


def run_setup(
    setup: str,
    broker: KafkaBroker,
    topic: str,
    layout: Layout,
    per_message: int,
    tmp: Path,
    flush_interval_s: float = 1.0,
) -> dict[str, Any]:
    """Drain the topic with `setup`; the rate, the cores each process kept busy, the check."""
    records = layout.messages(layout.records) * per_message
    workers = 2 if setup == "faust-2-served" else 1
    served = setup.endswith("-served")
    tmp.mkdir()
    database = tmp / "clickhouse"
    processes: list[Process] = []
    try:
        dsn = f"chdb://{database}"
        if served:
            port = free_port()
            processes.append(
                Process(
                    "db",
                    tykpulse("db", "serve", "--path", str(database), "--listen", f"127.0.0.1:{port}",
                             "--writer-password", PASSWORD),
                    tmp,
                )
            )  # fmt: skip
            dsn = f"http://tykpulse:{PASSWORD}@127.0.0.1:{port}"
            _wait_for_database(port, processes[0])
        ports = [free_port() for _ in range(workers)]
        for index, metrics_port in enumerate(ports):
            command = tykpulse(
                "worker", "--kafka", broker.bootstrap, "--topic", topic, "--kafka-group", tmp.name,
                "--clickhouse", dsn, "--metrics-port", str(metrics_port),
                "--flush-interval-s", str(flush_interval_s),
            )  # fmt: skip
            processes.append(Process(f"worker-{index}", command, tmp))
        window = _drain(layout, ports, processes[-workers:], broker, processes)
        landed = _landed(dsn) if served else None
    finally:
        for process in reversed(processes):
            process.stop()
    if landed is None:
        landed = _landed(dsn)
    if landed != records:
        msg = f"{setup}: the views hold {landed} records, the topic {records}"
        raise BenchError(msg)
    elapsed = window.seconds
    busy = {name: seconds / elapsed for name, seconds in window.cpu_seconds.items()}
    timed = window.messages * per_message
    return {
        "setup": setup,
        "workers": workers,
        "records": records,
        "timed_records": timed,
        "seconds": elapsed,
        "records_per_s": timed / elapsed,
        "cores_busy": busy,
        "cores_busy_total": sum(busy.values()),
        # CPU of every process (broker, database, workers) per record landed
        "cpu_us_per_record": sum(window.cpu_seconds.values()) / timed * 1e6,
    }


def _wait_for_database(port: int, server: Process) -> None:
    """Until `db serve` accepts connections (a client would log every refused attempt)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        server.check()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.3)
    msg = f"db serve not answering within 120 s:\n{server.tail()}"
    raise BenchError(msg)


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """What the workers landed while all of them were writing, and each process's CPU meanwhile."""

    seconds: float
    messages: int
    cpu_seconds: dict[str, float]


def _drain(
    layout: Layout, ports: list[int], workers: list[Process], broker: KafkaBroker, processes: list[Process]
) -> Window:
    """Poll the workers until every message of the topic landed.

    The window opens once every worker holds partitions and every partition has
    been claimed (a partition's count starts where its claim does), when the
    workers start reading, and closes at the last landed flush: like the local
    runner's time, it includes filling the first chunk and writing the last.
    """
    pids = {p.name: p.proc.pid for p in processes} | {"broker": broker.pid or 0}

    def cpu_now() -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in pids.items()}

    progress = Progress(layout)
    messages = layout.messages(layout.records)
    opened: tuple[float, int, dict[str, float]] | None = None
    closed: tuple[float, int, dict[str, float]] | None = None
    progress_at = next_report = time.monotonic()
    while not progress.done:
        now = time.monotonic()
        for worker in workers:
            worker.check()
        before = progress.messages
        for index, port in enumerate(ports):
            progress.observe(index, worker_status(port))
        if opened is None and progress.all_held(len(ports)):
            opened = (now, progress.messages, cpu_now())
        if progress.messages > before:
            progress_at = now
            if opened is not None:
                closed = (now, progress.messages, cpu_now())
        if now - progress_at > _STALL_S:
            tails = "\n".join(f"--- {w.name}\n{w.tail()}" for w in workers)
            msg = f"no progress for {_STALL_S:.0f} s at {progress.messages}/{messages} messages:\n{tails}"
            raise BenchError(msg)
        if now >= next_report:
            log(f"    {progress.messages:,}/{messages:,} messages landed")
            next_report = now + 5
        time.sleep(_POLL_S)
    if opened is None or closed is None or closed[0] - opened[0] < 1.0:
        msg = (
            f"the topic drained before all {len(ports)} workers read for a second (workers that held "
            f"partitions: {sorted(progress.holding)}): add records"
        )
        raise BenchError(msg)
    return Window(
        closed[0] - opened[0],
        closed[1] - opened[1],
        {name: closed[2][name] - opened[2][name] for name in pids},
    )


def _landed(dsn: str) -> int:
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        return count(client, LANDED_SQL)
    finally:
        client.close()


# -- rounds and summary ---------------------------------------------------------------------


def measure(
    rounds: int,
    records: int,
    local_s: float,
    compression: str,
    bundle_messages: int,
    flush_interval_s: float = 1.0,
    quiet_s: float = 1.0,
) -> dict[str, Any]:
    """Fill one topic, then `rounds` rounds of the local runner and every setup; the summary."""
    shape = WorkloadShape(100)
    pool = MessagePool(shape)
    messages = records // shape.records_per_message
    records = messages * shape.records_per_message
    runs: list[dict[str, Any]] = []
    # An initial rebalance delay (the harness sets 0 for quick tests): workers started together
    # then join one generation, instead of the first taking every partition and draining the
    # topic alone. Kafka's default, 3 s, is shorter than the spread of two worker start-ups on
    # a busy 2-core machine (seen in CI); each join restarts the wait, so 8 s costs 8 s a setup.
    delay = {"group.initial.rebalance.delay.ms": "8000"}
    with KafkaBroker(extra_config=delay) as broker, tempfile.TemporaryDirectory(prefix="bench-kf-") as tmp:
        broker.create_topic("bench", partitions=PARTITIONS)
        started = time.monotonic()
        layout = asyncio.run(fill(broker.bootstrap, "bench", pool, messages, compression, bundle_messages))
        log(
            f"  kafka: {messages:,} messages ({records:,} records) in {sum(layout.records.values()):,} "
            f"Kafka records, {compression}, in {time.monotonic() - started:.1f} s"
        )
        for index in range(rounds):
            spec = E2ESpec("tykpulse", shape, local_s, flush_interval_s=flush_interval_s, quiet_s=quiet_s)
            local = run_e2e(spec)
            runs.append({"setup": "local", "round": index, "records_per_s": local["records_per_s"]})
            log(f"  kafka round={index} setup=local records/s={local['records_per_s']:,.0f}")
            for setup in SETUPS:
                workdir = Path(tmp) / f"r{index}-{setup}"
                result = run_setup(
                    setup, broker, "bench", layout, shape.records_per_message, workdir, flush_interval_s
                )
                runs.append({**result, "round": index})
                busy = " ".join(f"{k}={v:.2f}" for k, v in result["cores_busy"].items())
                log(
                    f"  kafka round={index} setup={setup} records/s={result['records_per_s']:,.0f} "
                    f"cores busy {result['cores_busy_total']:.2f} ({busy})"
                )
    return {"runs": runs, "summary": summarise(runs)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["setup"]] = run

    def median(setup: str, key: str) -> float:
        return float(statistics.median(r[setup][key] for r in by_round.values()))

    def ratio(setup: str, against: str) -> float:
        ratios = [r[setup]["records_per_s"] / r[against]["records_per_s"] for r in by_round.values()]
        return float(statistics.median(ratios))

    return {
        "local_records_per_s": median("local", "records_per_s"),
        **{f"{s.replace('-', '_')}_records_per_s": median(s, "records_per_s") for s in SETUPS},
        **{f"{s.replace('-', '_')}_cpu_us_per_record": median(s, "cpu_us_per_record") for s in SETUPS},
        "faust_local_ratio": ratio("faust-1", "local"),
        "faust_scaling": ratio("faust-2-served", "faust-1-served"),
        # What this machine's cores allow two workers, at the CPU a record costs them (all
        # processes: workers, database, broker), as a multiple of one worker's rate.
        "faust_scaling_machine_bound": statistics.median(
            (os.cpu_count() or 1)
            * 1e6
            / r["faust-2-served"]["cpu_us_per_record"]
            / r["faust-1-served"]["records_per_s"]
            for r in by_round.values()
        ),
    }


def summary_line(summary: dict[str, Any]) -> str:
    return (
        f"kafka: faust_records_per_s={summary['faust_1_records_per_s']:.0f} "
        f"local_records_per_s={summary['local_records_per_s']:.0f} "
        f"faust_local_ratio={summary['faust_local_ratio']:.2f} "
        f"two_worker_scaling={summary['faust_scaling']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kafka_workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every setup (default 3)")
    parser.add_argument(
        "--records", type=int, default=1_500_000, help="records in the topic (default 1.5 M, ~1 GB)"
    )
    parser.add_argument("--local-seconds", type=float, default=6.0, help="the local runner's sending time")
    parser.add_argument(
        "--compression",
        default=KafkaBridgeSettings().bridge_compression,
        help="the topic's compression (default: the bridge's default)",
    )
    parser.add_argument(
        "--bundle-messages",
        type=int,
        default=KafkaBridgeSettings().bridge_bundle_messages,
        help="most messages of a node per Kafka record (default: the bridge's; 1: no bundles)",
    )
    parser.add_argument(
        "--flush-interval-s", type=float, default=1.0, help="every worker's flush interval (default 1)"
    )
    parser.add_argument("--out", type=Path, help="write the runs and the summary here as JSON")
    args = parser.parse_args(argv)
    result = measure(
        args.rounds,
        args.records,
        args.local_seconds,
        args.compression,
        args.bundle_messages,
        args.flush_interval_s,
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(summary_line(result["summary"]), flush=True)


if __name__ == "__main__":
    main()
