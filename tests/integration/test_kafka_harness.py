"""The Kafka harness runs a real broker: exact produce/consume round trip and lifecycle."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import Counter, defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from tests.harness.kafka.broker import KafkaBroker, KafkaHarnessError, new_cluster_id

pytestmark = pytest.mark.integration

PARTITIONS = 4
N_KEYS = 32
PER_KEY = 125  # 4000 messages
CONSUME_DEADLINE_S = 90.0


def expected_partition(key: bytes, partitions: int = PARTITIONS) -> int:
    """Kafka's default (Java client) keyed partitioner: murmur2(key) & 0x7fffffff % n."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def _produce(bootstrap: str, topic: str) -> dict[bytes, set[int]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        request_timeout_ms=30000,
    )
    await producer.start()
    partitions_by_key: dict[bytes, set[int]] = defaultdict(set)
    try:
        futures = []
        keys = []
        for seq in range(PER_KEY):
            for k in range(N_KEYS):
                key = f"api-{k:02d}".encode()
                futures.append(await producer.send(topic, key=key, value=f"{k}:{seq}".encode()))
                keys.append(key)
        metadata = await asyncio.wait_for(asyncio.gather(*futures), timeout=60)
        for key, md in zip(keys, metadata, strict=True):
            partitions_by_key[key].add(md.partition)
    finally:
        await producer.stop()
    return partitions_by_key


async def _consume_all(
    bootstrap: str, topic: str, group: str, expected: int
) -> list[tuple[int, bytes, bytes, int]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[tuple[int, bytes, bytes, int]] = []
    try:
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, msgs in batch.items():
                records.extend((tp.partition, m.key, m.value, m.offset) for m in msgs)
        await consumer.commit()
        # nothing beyond what was produced
        extra = await consumer.getmany(timeout_ms=500)
        assert sum(len(v) for v in extra.values()) == 0
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        end = await consumer.end_offsets(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps}
        assert committed == end, (committed, end)
        assert consumer.assignment() == set(tps)
    finally:
        await consumer.stop()
    return records


async def _partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [desc] = await admin.describe_topics([topic])
        return len(desc["partitions"])
    finally:
        await admin.close()


@pytest.mark.timeout(240)
def test_idempotent_produce_then_group_consume_is_exact(kafka_broker: KafkaBroker) -> None:
    topic = f"harness-roundtrip-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    assert asyncio.run(_partition_count(kafka_broker.bootstrap, topic)) == PARTITIONS

    total = N_KEYS * PER_KEY
    produced_partitions = asyncio.run(_produce(kafka_broker.bootstrap, topic))
    # every key went to exactly one partition, the one Kafka's default partitioner picks
    for key, parts in produced_partitions.items():
        assert parts == {expected_partition(key)}, key

    records = asyncio.run(_consume_all(kafka_broker.bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}", total))

    # exact count, no duplicates, no losses
    assert len(records) == total
    values = Counter(v for _, _, v, _ in records)
    assert values == Counter(f"{k}:{s}".encode() for k in range(N_KEYS) for s in range(PER_KEY))

    # per-partition distribution of keyed messages
    want: Counter[int] = Counter()
    for k in range(N_KEYS):
        want[expected_partition(f"api-{k:02d}".encode())] += PER_KEY
    got = Counter(p for p, _, _, _ in records)
    assert got == want
    assert len(got) == PARTITIONS  # 32 keys hit all 4 partitions

    # within a partition, offsets are dense from 0 (idempotent, no gaps) and per-key order holds
    by_partition: dict[int, list[int]] = defaultdict(list)
    last_seq: dict[bytes, int] = {}
    for p, key, value, offset in sorted(records, key=lambda r: (r[0], r[3])):
        by_partition[p].append(offset)
        assert expected_partition(key) == p
        seq = int(value.split(b":")[1])
        assert seq == last_seq.get(key, -1) + 1, (key, seq)
        last_seq[key] = seq
    for p, offsets in by_partition.items():
        assert offsets == list(range(want[p])), p


@pytest.mark.timeout(180)
def test_broker_lifecycle_cleans_up() -> None:
    with KafkaBroker(heap="256m") as broker:
        pid = broker.pid
        workdir = broker.workdir
        assert pid is not None
        assert workdir is not None
        assert workdir.is_dir()
        assert broker.server_log is not None
        assert "[BrokerServer id=1]" in broker.server_log.read_text()  # its log goes there
        host, port = broker.bootstrap.split(":")
        assert host == "127.0.0.1"
        assert int(port) == broker.port
    assert not broker.is_running()
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # nobody listens on the port any more (SO_REUSEADDR, as servers use: TIME_WAIT is fine)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(port)))
        s.listen()


@pytest.mark.timeout(180)
def test_startup_failure_reports_log_tail() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        broker = KafkaBroker(port=taken, heap="256m", startup_timeout=90)
        with pytest.raises(KafkaHarnessError) as info:
            broker.start()
    message = str(info.value)
    assert "exited during startup" in message
    assert "Address already in use" in message
    assert "server.log" in message or "console" in message
    assert not broker.is_running()
    assert broker.workdir is None


def test_cluster_ids_are_safe_command_line_values() -> None:
    # a leading "-" made `StorageTool format -t <id>` fail about once in 64 starts
    ids = [new_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
