"""A bridge's records reach a worker in messages under the firehose's message limit (real ZeroMQ).

Found by attack: the Redis bridge packed 500 records to a message with no byte bound, and the
string fields of Tyk's records (User-Agent, path) are as long as a client makes them. One message
over the worker's limit dropped the bridge's connection (ZMQ_MAXMSGSIZE), and every good record
batched with the large ones was lost while the bridge counted them published and released them
from Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgspec
import pytest
import zmq

from pipelines.bridges.publishing import BridgePublisher, Sent
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.protocol import TOPIC_ANALYTICS
from pipelines.firehose.publisher import FirehosePublisher, MessageTooLargeError
from pipelines.firehose.subscriber import FirehoseSubscriber
from pipelines.ingest import Ingestor

pytestmark = pytest.mark.component

LIMIT = 64 * 1024


def record(path: str, user_agent_bytes: int = 10) -> dict[str, Any]:
    return {
        "timestamp": time.time_ns(),
        "org_id": "o",
        "api_id": "a",
        "response_code": 200,
        "path": path,
        "user_agent": "A" * user_agent_bytes,
    }


def test_records_are_split_under_the_limit_and_only_those_too_large_alone_are_dropped(
    zmq_context: zmq.Context[Any], caplog: pytest.LogCaptureFixture
) -> None:
    publisher = BridgePublisher(
        FirehosePublisher(
            zmq_context, [parse_endpoint("@tcp://127.0.0.1:0")], node="bridge-1", max_message_bytes=LIMIT
        )
    )
    subscriber = FirehoseSubscriber(
        zmq_context, [parse_endpoint(publisher.publisher.addresses[0])], max_message_bytes=LIMIT
    )
    ingestor = Ingestor()
    try:
        assert publisher.wait_for_subscriber(TOPIC_ANALYTICS, 10)
        good = [record(f"/good{i}") for i in range(60)]
        big = [record(f"/big{i}", user_agent_bytes=100_000) for i in range(3)]
        # what one drain hands over: good records around a few a client made huge
        batch = good[:25] + big[:2] + good[25:50] + big[2:] + good[50:]
        sent = publisher.publish(TOPIC_ANALYTICS, batch, threading.Event())
        assert sent == Sent(records=60, too_large=3, stopped=False)
        assert publisher.too_large_records == 3
        sizes: list[int] = []
        paths: list[str] = []
        deadline = time.monotonic() + 10
        while len(paths) < 60 and time.monotonic() < deadline:
            for frames in subscriber.receive(100):
                sizes.append(sum(len(f) for f in frames))
                paths += [r["path"] for r in msgspec.msgpack.decode(frames[2])]
                ingestor.ingest(frames)
        assert paths == [r["path"] for r in good]  # every good record, in order
        assert ingestor.take().analytics.height == 60
        assert (ingestor.stats.lost, ingestor.stats.rejected_total) == (0, 0)  # no gap in the sequence
        assert subscriber.disconnects == 0
        assert max(sizes) <= LIMIT
        assert len(sizes) > 1  # split: the whole batch alone was over the limit
    finally:
        subscriber.close()
        publisher.close(0)
    lines = [r.getMessage() for r in caplog.records if "record not published" in r.getMessage()]
    assert len(lines) == 1  # the first is logged; the rest counted
    assert f"limit of {LIMIT}" in lines[0]


def test_a_message_over_the_limit_is_refused_before_it_takes_a_sequence_number(
    zmq_context: zmq.Context[Any],
) -> None:
    publisher = FirehosePublisher(
        zmq_context, [parse_endpoint("@tcp://127.0.0.1:0")], node="n", max_message_bytes=LIMIT
    )
    try:
        with pytest.raises(MessageTooLargeError) as raised:
            publisher.publish(TOPIC_ANALYTICS, [record("/x", user_agent_bytes=LIMIT)])
        assert raised.value.limit == LIMIT
        assert raised.value.size > LIMIT
        assert publisher.nodes["n"].seq == 0
        assert publisher.sent_messages == 0
    finally:
        publisher.close(0, goodbye=False)


def test_a_flood_of_subscriptions_is_tracked_without_a_line_each(
    zmq_context: zmq.Context[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever may subscribe chooses how many subscriptions arrive. Found by attack: 100,000 distinct
    ones made 151,792 INFO lines (155 MiB of log) from a bridge, and has_subscriber, which runs before
    every send, walked every subscription. Still tracked exactly; logged once a period."""
    publisher = BridgePublisher(
        FirehosePublisher(zmq_context, [parse_endpoint("@tcp://127.0.0.1:0")], node="bridge-1")
    )
    flood = zmq_context.socket(zmq.SUB)
    worker = zmq_context.socket(zmq.SUB)
    try:
        flood.setsockopt(zmq.SNDHWM, 0)  # every subscription reaches the bridge
        flood.connect(publisher.publisher.addresses[0])
        for i in range(5_000):
            flood.setsockopt(zmq.SUBSCRIBE, b"x%05d" % i)
        with caplog.at_level(logging.INFO, logger="pipelines.bridges.publishing"):
            deadline = time.monotonic() + 10
            while len(publisher.subscriptions) < 5_000 and time.monotonic() < deadline:
                publisher.poll_subscriptions(100)
            assert len(publisher.subscriptions) == 5_000
            assert not publisher.has_subscriber(TOPIC_ANALYTICS)  # none of those prefixes matches
            worker.connect(publisher.publisher.addresses[0])
            worker.setsockopt(zmq.SUBSCRIBE, b"tyk.")
            assert publisher.wait_for_subscriber(TOPIC_ANALYTICS, 10)
            assert publisher.has_subscriber("tyk.event.QuotaExceeded")
            worker.setsockopt(zmq.UNSUBSCRIBE, b"tyk.")
            deadline = time.monotonic() + 10
            while publisher.has_subscriber(TOPIC_ANALYTICS) and time.monotonic() < deadline:
                publisher.poll_subscriptions(100)
            assert not publisher.has_subscriber(TOPIC_ANALYTICS)
        lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.bridges.publishing"]
        assert 1 <= len(lines) <= 2, lines  # before: 5,002
    finally:
        flood.close(linger=0)
        worker.close(linger=0)
        publisher.publisher.close()
