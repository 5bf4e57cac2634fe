"""The Kafka bridge counts every sequence gap it sees but logs them like the worker does: a line per
period, not one per message. Before, a publisher skipping every other seq (or a burst of drops at
a high-water mark) made a WARNING line for each message the bridge received: 20,000 messages,
19,999 lines."""

from __future__ import annotations

import logging

import pytest

from pipelines.bridges.kafka_bridge import KafkaBridge
from pipelines.settings import FirehoseSettings, KafkaBridgeSettings, KafkaSettings

pytestmark = pytest.mark.unit


def test_gaps_are_counted_and_logged_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    bridge = KafkaBridge(FirehoseSettings(), KafkaSettings(), KafkaBridgeSettings())
    with caplog.at_level(logging.WARNING, logger="pipelines.bridges.kafka_bridge"):
        for i in range(2_000):
            bridge._observe("gw-1", 1, 2 * i)  # what _produce does with each message's envelope
    assert bridge.summary.lost == 1_999
    gaps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sequence gap")]
    assert len(gaps) == 1, len(gaps)  # before: 1,999
    assert "node=gw-1 boot=1 seq=2 lost=1 lost_total=1 " in gaps[0]
