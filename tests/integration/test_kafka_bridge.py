"""tykpulse bridge kafka against a real broker: every message, keyed by node, in order, envelope intact."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from pipelines.firehose.codec import MessageDecoder
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.kafka_record import messages_of
from pipelines.firehose.protocol import Envelope
from pipelines.firehose.publisher import FirehosePublisher
from tests.conftest import T0_NS
from tests.harness.kafka.broker import KafkaBroker
from tests.harness.processes import free_port
from tests.helpers import analytics
from tests.integration.scaleout import Processes, read_topic, wait_until

pytestmark = pytest.mark.integration
NODES = [f"gw{i}" for i in range(6)]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


def publish(publisher: FirehosePublisher, per_node: int) -> None:
    for seq in range(per_node):
        for node in NODES:
            records = [analytics(T0_NS + seq, org=f"org{seq % 3}", api=node) for _ in range(3)]
            publisher.publish("tyk.analytics", records, node=node)
            if seq == 10 and node == "gw0":
                publisher.nodes[node].seq += 5  # five messages the bridge never sees: a gap downstream


def test_bridge_forwards_every_message_keyed_by_node(
    kafka_broker: KafkaBroker, kafka_topic: str, processes: Processes, zmq_context: zmq.Context[Any]
) -> None:
    port = free_port()
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")])
    for node in NODES:
        publisher.add_node(node)
    bridge = processes.start(
        "bridge",
        "bridge",
        "kafka",
        "--firehose",
        f"tcp://127.0.0.1:{port}",
        "--kafka",
        kafka_broker.bootstrap,
        "--topic",
        kafka_topic,
        "--drain-timeout-s",
        "1",
    )
    try:
        assert publisher.wait_for_subscribers(60)
        started_ms = time.time_ns() // 1_000_000
        publish(publisher, 200)
        publisher.maybe_heartbeat()
        wait_until(
            lambda: "bridge received=" in processes.log("bridge") or bridge.poll() is not None, "progress", 30
        )
    finally:
        publisher.close()
    assert processes.stop("bridge") == 0
    log = processes.log("bridge")
    assert "lost=5" in log.splitlines()[-1], log[-500:]

    records = read_topic(kafka_broker.bootstrap, kafka_topic)
    decoder = MessageDecoder()
    envelope = msgspec.msgpack.Decoder(Envelope)
    by_node: dict[str, list[int]] = collections.defaultdict(list)
    partitions: dict[str, set[int]] = collections.defaultdict(set)
    carried = 0
    for record in records:
        assert started_ms - 1000 <= record.timestamp <= time.time_ns() // 1_000_000
        for frames in messages_of(record.value, record.headers):
            decoded = decoder.decode(frames)
            env = envelope.decode(frames[1])
            assert record.key == env.node.encode()
            assert getattr(decoded, "records", None), decoded
            by_node[env.node].append(env.seq)
            partitions[env.node].add(record.partition)
            carried += 1
    assert len(records) < carried  # messages of a node received together share a record (bundles)
    # per node: one heartbeat after its 200 messages, and the goodbye heartbeat publisher.close() sends
    heartbeats = {node: 2 for node in NODES}
    for node in NODES:
        expected = [s for s in range(200 + heartbeats[node] + (5 if node == "gw0" else 0))]
        if node == "gw0":
            expected = [s for s in expected if not 11 <= s <= 15]  # the skipped seqs 11..15
        assert by_node[node] == expected, node  # all there, in order: one partition per node
        assert len(partitions[node]) == 1
    assert len(set().union(*partitions.values())) > 1  # nodes spread over partitions
