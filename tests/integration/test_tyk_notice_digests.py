"""Real Redis pub/sub -> TykRedisBridge: KeySpaceUpdateNotification notices leave with digests only."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import redis

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.publishing import BridgePublisher, Sent
from pipelines.bridges.tyk_lists import AnalyticsListStore, analytics_lists
from pipelines.bridges.tyk_notifications import NotificationListener
from pipelines.bridges.tyk_records import FirehoseConverter
from pipelines.bridges.tyk_redis import DrainConfig, TykRedisBridge
from pipelines.firehose.protocol import NoticeRecord
from pipelines.security.notices import NoticeVerifier
from tests.harness.redis import RedisServer

pytestmark = pytest.mark.integration

FIXTURES = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "tyk" / "notifications.json").read_text("utf-8")
)
RAW_KEYS = ("raw-unhashed-key-abc123", "8c7b4f3e2a1d0c9b", "5e9d9544a1dcd60001d0ed20c6d5bb2a")


class CapturingPublisher:
    """Stands in for the ZeroMQ side: records what the bridge publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, list[dict[str, Any]]]] = []

    def has_subscriber(self, topic: str) -> bool:
        return True

    def publish(self, topic: str, records: list[dict[str, Any]], stop: threading.Event) -> Sent:
        # what ZeroMQ would carry: the records as encoded bytes
        self.published.append((topic, msgspec.msgpack.decode(msgspec.msgpack.encode(records))))
        return Sent(len(records), 0, stopped=False)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/8")
    try:
        yield c
    finally:
        c.close()


def test_keyspace_notices_from_redis_carry_digests(client: redis.Redis) -> None:
    digester = KeyDigester(b"deployment-key")
    listener = NotificationListener(client, FIXTURES["channel"])
    publisher = CapturingPublisher()
    bridge = TykRedisBridge(
        AnalyticsListStore(client, analytics_lists("analytics-", "digests", "")),
        cast(BridgePublisher, publisher),
        FirehoseConverter(digester),
        notifications=listener,
        node_secret=FIXTURES["node_secret"],
    )
    try:
        listener.poll(0.1)  # the subscription is confirmed before anything is published
        for note in FIXTURES["messages"]:
            assert client.publish(FIXTURES["channel"], note["wire"]) == 1
        stop = threading.Event()
        deadline = time.monotonic() + 10
        while bridge.stats.notices < len(FIXTURES["messages"]) and time.monotonic() < deadline:
            bridge.forward_notifications(0.1, stop)
    finally:
        listener.close()
    assert bridge.stats.notices == len(FIXTURES["messages"])
    topic = "tyk.notice.KeySpaceUpdateNotification"
    keyspace = [r for t, rs in publisher.published if t == topic for r in rs]
    assert len(keyspace) == 2  # the genuine notice and the one signed with the wrong secret
    everything = json.dumps(publisher.published)
    for key in RAW_KEYS:
        assert key not in everything
        assert digester.digest(key) in everything
    verifier = NoticeVerifier(FIXTURES["node_secret"])
    verdicts = sorted(verifier.verify(msgspec.convert(r, NoticeRecord)) is None for r in keyspace)
    assert verdicts == [False, True]  # the genuine one re-signed, the forged one not


GOOD_NOTICE = b'{"command":"ApiUpdated","payload":"good","algorithm":0}'


def notice_bridge(
    client: redis.Redis, channel: str, name: str
) -> tuple[TykRedisBridge, NotificationListener, CapturingPublisher]:
    """A bridge listening on `channel` (subscribed once this returns), publishing to a capture."""
    listener = NotificationListener(client, channel)
    publisher = CapturingPublisher()
    bridge = TykRedisBridge(
        AnalyticsListStore(client, analytics_lists("analytics-", name, "")),
        cast(BridgePublisher, publisher),
        FirehoseConverter(KeyDigester(b"deployment-key")),
        notifications=listener,
    )
    listener.poll(0.1)
    return bridge, listener, publisher


def forward(bridge: TykRedisBridge, count: int) -> None:
    """Forward notifications until `count` were counted, good or bad (10 s at most)."""
    stop = threading.Event()
    deadline = time.monotonic() + 10
    while bridge.stats.notices + bridge.stats.bad_notices < count and time.monotonic() < deadline:
        bridge.forward_notifications(0.1, stop)


@pytest.mark.parametrize(
    "hostile",
    [
        b'{"command":"ApiUpdated","payload":"evil","algorithm":99999999999999999999999}',  # OverflowError
        b'{"command":"ApiUpdated","payload":"deep","x":' + b"[" * 5000 + b"]" * 5000 + b"}",  # RecursionError
    ],
    ids=["huge_algorithm", "nested_5000_deep"],
)
def test_hostile_notifications_are_counted_and_the_good_ones_published(
    client: redis.Redis, hostile: bytes
) -> None:
    channel = "tyk.cluster.notifications.hostile"
    bridge, listener, publisher = notice_bridge(client, channel, "hostile")
    wire = [GOOD_NOTICE, hostile, GOOD_NOTICE]
    try:
        for data in wire:
            assert client.publish(channel, data) == 1
        forward(bridge, len(wire))
    finally:
        listener.close()
    assert (bridge.stats.notices, bridge.stats.bad_notices) == (2, 1)
    payloads = [r["payload"] for topic, rs in publisher.published for r in rs]
    assert payloads == ["good", "good"]


def test_a_flood_of_bad_notifications_is_counted_not_logged_line_by_line(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever may PUBLISH on Tyk's Redis sent bad notifications at their own rate, and each was a
    WARNING line (a real bridge: 20,000 of 12 bytes wrote 20,000 lines, 3.4 MB, of its log)."""
    channel = "tyk.cluster.notifications.flood"
    bridge, listener, _ = notice_bridge(client, channel, "flood")
    wire = [b"not json %d" % i for i in range(500)] + [GOOD_NOTICE]
    try:
        pipe = client.pipeline(transaction=False)
        for data in wire:
            pipe.publish(channel, data)
        pipe.execute()
        with caplog.at_level(logging.WARNING, logger="pipelines.bridges.tyk_redis"):
            forward(bridge, len(wire))
    finally:
        listener.close()
    assert (bridge.stats.notices, bridge.stats.bad_notices) == (1, 500)
    lines = [r.getMessage() for r in caplog.records if "dropped notification" in r.getMessage()]
    assert len(lines) == 1, len(lines)  # before: 500
    assert "count=1 " in lines[0]


class LateSubscriber(CapturingPublisher):
    """No worker subscribes to notices until `present` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.present = False

    def has_subscriber(self, topic: str) -> bool:
        return self.present


def test_held_notices_are_bounded_in_bytes_and_the_newest_kept(client: redis.Redis) -> None:
    # Whoever may PUBLISH on Tyk's Redis picks the size: a count alone let 100 notices of 4 MiB
    # hold 400 MiB while no worker subscribed.
    channel = "tyk.cluster.notifications.held-bytes"
    listener = NotificationListener(client, channel)
    publisher = LateSubscriber()
    bridge = TykRedisBridge(
        AnalyticsListStore(client, analytics_lists("analytics-", "held-bytes", "")),
        cast(BridgePublisher, publisher),
        FirehoseConverter(KeyDigester(b"deployment-key")),
        config=DrainConfig(max_held_notice_bytes=1 << 20),
        notifications=listener,
    )
    stop = threading.Event()
    try:
        listener.poll(0.1)
        payloads = [f"{i}" + "x" * 300_000 for i in range(10)] + ["y" * (2 << 20), "small"]
        for payload in payloads:
            client.publish(channel, json.dumps({"command": "ApiUpdated", "payload": payload}))
        deadline = time.monotonic() + 10
        while bridge.stats.dropped_notices < 8 and time.monotonic() < deadline:
            bridge.forward_notifications(0.1, stop)
        publisher.present = True
        while bridge.stats.notices < 4 and time.monotonic() < deadline:
            bridge.forward_notifications(0.1, stop)
    finally:
        listener.close()
    published = [r["payload"] for _, records in publisher.published for r in records]
    # 3 of 300 KB and "small" fit in 1 MiB; the 2 MiB one never fits
    assert published == [*payloads[7:10], "small"]
    assert (bridge.stats.notices, bridge.stats.dropped_notices) == (4, 8)
