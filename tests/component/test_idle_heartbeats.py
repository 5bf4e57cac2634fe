"""An idle simulated fleet still heartbeats every node on time, over real ZeroMQ."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
import zmq

from pipelines.firehose.codec import DecodedMessage, MessageDecoder
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.protocol import TopicKind
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.firehose.subscriber import FirehoseSubscriber
from pipelines.settings import SimulatorSettings
from pipelines.simulate.fleet import Fleet

pytestmark = pytest.mark.component


def test_an_idle_fleet_heartbeats_every_node_at_least_every_interval(
    zmq_context: zmq.Context[Any], port: int
) -> None:
    publisher = FirehosePublisher(
        zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], heartbeat_interval_ms=300
    )
    subscriber = FirehoseSubscriber(zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{port}")])
    settings = SimulatorSettings(
        record_rate=0.001, duration_s=2.5, gateways=2, token_wave_every_s=3600, config_burst_every_s=3600
    )
    fleet = Fleet(settings, publisher, node_prefix="idle")
    received: list[list[bytes]] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            received.extend(subscriber.receive(50))

    thread = threading.Thread(target=receive)
    try:
        assert publisher.wait_for_subscribers(30)
        thread.start()
        summary = fleet.run(threading.Event())
        done.set()
        thread.join(10)
    finally:
        done.set()
        publisher.close(0)
        subscriber.close()
    assert summary.analytics == 0  # nothing but heartbeats
    beats: dict[str, list[int]] = {}
    for frames in received:
        decoded = MessageDecoder().decode(frames)
        assert isinstance(decoded, DecodedMessage)
        assert decoded.kind is TopicKind.HEARTBEAT
        (record,) = decoded.structs
        assert record.interval_ms == 300
        beats.setdefault(record.node, []).append(record.timestamp)
    assert sorted(beats) == ["idle-dashboard", "idle-gw01", "idle-gw02"]
    for node, stamps in beats.items():
        gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]
        assert len(stamps) >= 6, node
        assert max(gaps) <= 1.5 * 300, (node, gaps)  # promised 300 ms; stale only at 900 ms
