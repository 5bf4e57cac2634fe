"""Helpers of the scale-out tests: tykpulse processes, Kafka reads, worker status, ClickHouse checks."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.harness.processes import Processes
from tests.harness.tykpulse import wait_until

__all__ = [
    "Processes",  # defined in tests.harness.processes; the scale-out tests import it from here
    "end_offsets",
    "ingest_health",
    "read_topic",
    "topic_partitions",
    "view_mismatches",
    "wait_until",
    "worker_status",
]


def worker_status(port: int) -> dict[str, Any] | None:
    """A worker's state (owner, topic, partitions, written) from its metrics endpoint's /status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
            return dict(json.loads(response.read())["state"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every record of the topic, from the beginning, in partition then offset order."""

    async def consume() -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(bootstrap, topic)
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:  # explicit, so no reset to "latest" can race with it
                consumer.seek(tp, 0)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while sum(await _positions(consumer, partitions)) < sum(ends.values()):
                if time.monotonic() > deadline:
                    break
                batch = await consumer.getmany(timeout_ms=500)
                for tp_records in batch.values():
                    records.extend(tp_records)
            return sorted(records, key=lambda r: (r.partition, r.offset))
        finally:
            await consumer.stop()

    return asyncio.run(consume())


async def topic_partitions(bootstrap: str, topic: str) -> list[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
        return [TopicPartition(topic, p["partition"]) for p in sorted(description["partitions"], key=str)]
    finally:
        await admin.close()


async def _positions(consumer: Any, partitions: list[Any]) -> list[int]:
    return [await consumer.position(tp) for tp in partitions]


def end_offsets(bootstrap: str, topic: str) -> int:
    async def ends() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            partitions = await topic_partitions(bootstrap, topic)
            return int(sum((await consumer.end_offsets(partitions)).values()))
        finally:
            await consumer.stop()

    return asyncio.run(ends())


def view_mismatches(client: Any, truth: dict[str, Any]) -> list[str]:
    """Every difference between the views and the simulator's ground truth (empty: exact).

    Counts must be equal, distinct counts within 2 %, quantiles within 1 % (the contract's bounds).
    """
    from tests.integration.test_end_to_end import KEYS, view_rows

    problems = []
    for view, expected in sorted(truth["views"].items()):
        rollup = view.rsplit("_", 1)[0]
        if rollup not in KEYS:
            continue
        actual = view_rows(client, view)
        if len(actual) != len(expected):
            problems.append(f"{view}: {len(actual)} rows, expected {len(expected)}")
        for row in expected:
            got = actual.get(tuple(row[k] for k in KEYS[rollup]))
            if got is None:
                problems.append(f"{view}: missing {row}")
                continue
            for column, value in row.items():
                if column in KEYS[rollup]:
                    continue
                if column.startswith("latency_p"):
                    bad = abs(got[column] - value) > 0.01 * value + 1e-9
                elif column == "distinct_keys":
                    bad = abs(got[column] - value) > 0.02 * value
                else:
                    bad = got[column] != value
                if bad:
                    problems.append(f"{view}: {column} {got[column]} != {value} at {row}")
    return problems


def ingest_health(client: Any) -> dict[str, tuple[int, int, int, int]]:
    result = client.query(
        "SELECT node_id, sum(messages), sum(records), sum(lost_messages), sum(rejected) "
        "FROM tykpulse.ingest_health_1m GROUP BY node_id"
    )
    return {row[0]: tuple(int(v) for v in row[1:]) for row in result.result_rows}  # type: ignore[misc]
