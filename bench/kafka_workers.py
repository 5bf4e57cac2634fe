"""Throughput of the Faust worker path: a pre-filled Kafka topic drained by N `tykpulse worker`s.

    python -m bench.kafka_workers --workers 1 --messages 4000 --batch 100
    python -m bench.kafka_workers --workers 2 --clickhouse http://tykpulse:pw@127.0.0.1:8123

A real broker (the test harness) gets a 4-partition topic filled with firehose messages
(simulated Tyk analytics, `--batch` records each, keyed by node as the bridge does); then the
workers start and the clock runs from the first landed flush to the last message written
(status endpoints). With one worker and no --clickhouse, the worker owns an embedded database.
Everything shares this machine's cores with the broker: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from pipelines.firehose.codec import MessageEncoder
from pipelines.firehose.kafka_record import read_envelope, to_record
from pipelines.simulate.traffic import TrafficDrawer
from pipelines.simulate.world import World, WorldShape
from tests.harness.kafka.broker import KafkaBroker
from tests.harness.processes import free_port, stop_process
from tests.integration.scaleout import worker_status

NODES = [f"bench-gw{i:02d}" for i in range(16)]


async def fill(bootstrap: str, topic: str, messages: int, batch: int) -> int:
    rng = np.random.default_rng(1)
    drawer = TrafficDrawer(World.build(WorldShape(20, 200, 30_000), rng), rng)
    encoder = MessageEncoder("msgpack")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    records = 0
    try:
        now = time.time_ns()
        sends = []
        for seq in range(messages // len(NODES)):
            for node in NODES:
                drawn = drawer.analytics(batch, now, 60 * 10**9)
                frames = encoder.encode(
                    "tyk.analytics", node=node, boot=1, seq=seq, sent=now, records=drawn.analytics
                )
                record = to_record(frames, read_envelope(frames[1]))
                sends.append(await producer.send(topic, record.value, key=record.key, headers=record.headers))
                records += batch
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clickhouse", default="", help="DSN; default: embedded (one worker only)")
    args = parser.parse_args()
    with KafkaBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        broker.create_topic("bench", partitions=4)
        records = asyncio.run(fill(broker.bootstrap, "bench", args.messages, args.batch))
        messages = args.messages // len(NODES) * len(NODES)
        dsn = args.clickhouse or f"chdb://{Path(tmp) / 'clickhouse'}"
        ports = [free_port() for _ in range(args.workers)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli.main", "--log-level", "warning", "worker",
                 "--kafka", broker.bootstrap, "--topic", "bench", "--kafka-group", "bench",
                 "--clickhouse", dsn, "--web-port", str(port), "--web-bind", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in ports
        ]  # fmt: skip
        try:
            started = None
            while True:
                statuses = [worker_status(p) for p in ports]
                written = sum(s["written"]["messages"] for s in statuses if s)
                if written and started is None:
                    started, first = time.monotonic(), written
                if written >= messages:
                    break
                time.sleep(0.2)
            elapsed = time.monotonic() - (started or time.monotonic())
            rate = (messages - first) * args.batch / elapsed if elapsed else float("nan")
            print(
                f"workers={args.workers} messages={messages} records={records} batch={args.batch} "
                f"seconds={elapsed:.1f} records_per_s={rate:,.0f}"
            )
        finally:
            for proc in procs:
                stop_process(proc, 30)


if __name__ == "__main__":
    main()
