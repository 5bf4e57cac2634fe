"""One `tykpulse worker` on a real broker, its own embedded database: ClickHouse decides where to resume.

The consumer group's committed offsets are set to the end of the topic before the worker first
starts, as if another tool had committed them: the worker must still process everything, because
ClickHouse holds no position yet. A second start (same group, same database; this time by Faust's
own command line, `faust -A pipelines.runners.faust_app worker`) and more records must land exactly once.

A transaction's commit marker takes an offset no consumer is handed: a worker must go on past it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata

from pipelines.firehose.kafka_record import read_envelope, to_record
from tests.harness.kafka.broker import KafkaBroker
from tests.harness.processes import free_port
from tests.helpers import analytics
from tests.helpers import message as firehose_message
from tests.integration.scaleout import (
    Processes,
    end_offsets,
    ingest_health,
    read_topic,
    topic_partitions,
    wait_until,
    worker_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
# A worker refuses records stamped more than max_past_s (7 days) before its clock, so the
# messages are stamped at the start of the current hour, not at the fixed T0 of unit tests.
RECENT_NS = time.time_ns() // (3600 * 10**9) * (3600 * 10**9)
NODES = [f"gw{i}" for i in range(6)]
PER_MESSAGE = 4


async def produce(bootstrap: str, topic: str, seqs: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sends = []
        for seq in seqs:
            for node in NODES:
                records = [analytics(RECENT_NS + seq * 10**9 + i, api=f"a{i}") for i in range(PER_MESSAGE)]
                frames = firehose_message("tyk.analytics", records, node=node, seq=seq)
                record = to_record(frames, read_envelope(frames[1]))
                sends.append(await producer.send(topic, record.value, key=record.key, headers=record.headers))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def produce_in_transaction(bootstrap: str, topic: str, partitions: int) -> None:
    """A message of node `tx<p>` in each partition, in one transaction: its commit marker follows."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{uuid.uuid4().hex}")
    await producer.start()
    try:
        async with producer.transaction():
            for partition in range(partitions):
                records = [analytics(RECENT_NS + i, api=f"a{i}") for i in range(PER_MESSAGE)]
                frames = firehose_message("tyk.analytics", records, node=f"tx{partition}", seq=0)
                record = to_record(frames, read_envelope(frames[1]))
                await producer.send(topic, record.value, headers=record.headers, partition=partition)
    finally:
        await producer.stop()


async def commit_at_end(bootstrap: str, topic: str, group: str) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await topic_partitions(bootstrap, topic)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit({tp: OffsetAndMetadata(end, "") for tp, end in ends.items()})
    finally:
        await consumer.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


def run_worker(
    procs: Processes,
    broker: KafkaBroker,
    topic: str,
    dsn: str,
    expected_messages: int,
    *,
    faust_cli: bool = False,
    landed: int | None = None,
) -> None:
    """A worker until its status shows `expected_messages` offsets, then SIGTERM: `tykpulse worker`,
    or with faust_cli the same app as Faust's own command line runs it (settings from TYKPULSE_*).
    With `landed`, it waits until that many offsets are in ClickHouse too (the last record of each
    partition flushed), as a SIGTERM before the write thread takes a flush drops it."""
    port = free_port()
    settings = {
        "kafka_bootstrap": broker.bootstrap,
        "kafka_topic": topic,
        "kafka_group": f"g-{topic}",
        "clickhouse_dsn": dsn,
        "metrics_port": str(port),
        "flush_interval_s": "0.5",
    }
    if faust_cli:
        env = {**os.environ, **{f"TYKPULSE_{name.upper()}": value for name, value in settings.items()}}
        command = [sys.executable, "-m", "faust", "-A", "pipelines.runners.faust_app", "worker", "-l", "info"]
        procs.start_command("worker", command, env)
    else:
        flags = {"kafka_bootstrap": "--kafka", "kafka_topic": "--topic", "clickhouse_dsn": "--clickhouse"}
        args = [part for name, value in settings.items() for part in (flags.get(name, option(name)), value)]
        procs.start("worker", "worker", *args)

    def written() -> Any:
        status = worker_status(port)
        if not status:
            return False
        partitions = status["partitions"].values()
        read = sum(p["next_offset"] for p in partitions) >= expected_messages
        return read and (landed is None or sum(p["landed_offset"] + 1 for p in partitions) >= landed)

    wait_until(written, f"the worker to reach {expected_messages} offsets", 180)
    procs.procs["worker"].send_signal(signal.SIGTERM)
    assert procs.procs["worker"].wait(timeout=60) == 0
    procs.procs.pop("worker")


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def landed(dsn: str) -> tuple[dict[str, Any], int]:
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        requests = int(client.query("SELECT sum(requests) FROM tykpulse.traffic_1h").result_rows[0][0])
        return ingest_health(client), requests
    finally:
        client.close()


def test_clickhouse_not_kafka_says_where_to_resume(
    kafka_broker: KafkaBroker, kafka_topic: str, processes: Processes, tmp_path: Path
) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    asyncio.run(produce(kafka_broker.bootstrap, kafka_topic, range(40)))
    # Kafka's committed offsets say "all read": only ClickHouse's (empty) positions can
    # make the worker read the 40 messages, whether it seeks at assignment or on delivery.
    asyncio.run(commit_at_end(kafka_broker.bootstrap, kafka_topic, f"g-{kafka_topic}"))
    run_worker(processes, kafka_broker, kafka_topic, dsn, 40 * len(NODES), landed=40 * len(NODES))
    health, requests = landed(dsn)
    assert health == {node: (40, 40 * PER_MESSAGE, 0, 0) for node in NODES}
    assert requests == 40 * len(NODES) * PER_MESSAGE

    asyncio.run(produce(kafka_broker.bootstrap, kafka_topic, range(45, 60)))  # seqs 40..44 never sent
    # the second start through Faust's own command line: the same app, endpoint and exactly-once
    run_worker(
        processes, kafka_broker, kafka_topic, dsn, 55 * len(NODES), faust_cli=True, landed=55 * len(NODES)
    )
    health, requests = landed(dsn)
    assert health == {node: (55, 55 * PER_MESSAGE, 5, 0) for node in NODES}
    assert requests == 55 * len(NODES) * PER_MESSAGE
    assert "partitions assigned" in processes.log("worker")


def test_a_transaction_marker_does_not_stop_a_partition(
    kafka_broker: KafkaBroker, kafka_topic: str, processes: Processes, tmp_path: Path
) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    asyncio.run(produce(kafka_broker.bootstrap, kafka_topic, range(10)))
    asyncio.run(produce_in_transaction(kafka_broker.bootstrap, kafka_topic, 4))
    asyncio.run(produce(kafka_broker.bootstrap, kafka_topic, range(10, 20)))
    # every offset but the four markers holds a record: the worker reads up to the end of each
    # partition, and the last record of each lands
    last = {r.partition: r.offset for r in read_topic(kafka_broker.bootstrap, kafka_topic)}
    end = end_offsets(kafka_broker.bootstrap, kafka_topic)
    run_worker(processes, kafka_broker, kafka_topic, dsn, end, landed=sum(o + 1 for o in last.values()))
    health, requests = landed(dsn)
    assert health == {
        **{node: (20, 20 * PER_MESSAGE, 0, 0) for node in NODES},
        **{f"tx{p}": (1, PER_MESSAGE, 0, 0) for p in range(4)},
    }
    assert requests == (20 * len(NODES) + 4) * PER_MESSAGE
