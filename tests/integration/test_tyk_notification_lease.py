"""Several Tyk bridges on one real Redis: each cluster notification is published once, by one bridge.

Redis pub/sub gives every bridge every notification; before the lease, two bridges published each
one twice and `config_changes` counted it twice. The lease's holder publishes, the others count what
they set aside, and take over on a clean stop (at once) or a crash (once the lease lapses).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis

from pipelines.bridges import tyk_redis
from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.notification_lease import NotificationLease, lease_key
from pipelines.bridges.publishing import BridgePublisher, Sent
from pipelines.bridges.tyk_lists import AnalyticsListStore, analytics_lists
from pipelines.bridges.tyk_notifications import NotificationListener
from pipelines.bridges.tyk_records import FirehoseConverter
from pipelines.bridges.tyk_redis import TykRedisBridge
from tests.harness.redis import RedisServer

pytestmark = pytest.mark.integration

SHORT_TTL_S = 0.6


class CapturingPublisher:
    def __init__(self) -> None:
        self.payloads: list[str] = []

    def has_subscriber(self, topic: str) -> bool:
        return True

    def publish(self, topic: str, records: list[dict[str, Any]], stop: threading.Event) -> Sent:
        self.payloads += [record["payload"] for record in records]
        return Sent(len(records), 0, stopped=False)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/9")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def channel() -> str:
    return f"tyk.cluster.notifications.{uuid.uuid4().hex}"


def holder_of(client: redis.Redis, channel: str) -> str:
    """The holder's name in the lease's value (after its tenure token)."""
    value = client.get(lease_key(channel))
    assert isinstance(value, bytes)
    return value.decode().split(" ", 1)[1]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _polled(
    bridge: TykRedisBridge, stop: threading.Event, condition: Callable[[], bool]
) -> Callable[[], bool]:
    """`condition`, asked after one more poll of the bridge's notifications."""

    def poll_then_check() -> bool:
        bridge.forward_notifications(0.01, stop)
        return condition()

    return poll_then_check


def test_one_holder_at_a_time_and_a_clean_stop_hands_over_at_once(client: redis.Redis, channel: str) -> None:
    first = NotificationLease(client, channel, "host-a:one", ttl_s=30)
    second = NotificationLease(client, channel, "host-b:two", ttl_s=30)
    assert first.held()
    assert not second.held()
    assert holder_of(client, channel) == "host-a:one"
    first.give_up()
    assert client.get(lease_key(channel)) is None
    assert not first.held()  # for good: it does not take the lease back
    # the standby looks again within a second, well before the 30 s time to live
    _wait_for(second.held, timeout_s=3)
    assert holder_of(client, channel) == "host-b:two"
    assert not NotificationLease(client, channel, "host-a:one", ttl_s=30).held()


def test_a_crashed_holder_is_replaced_once_its_lease_lapses_and_a_restart_takes_its_own_back(
    client: redis.Redis, channel: str
) -> None:
    crashed = NotificationLease(client, channel, "host-a:one", ttl_s=SHORT_TTL_S)
    assert crashed.held()  # then never renewed again: a SIGKILL
    standby = NotificationLease(client, channel, "host-b:two", ttl_s=SHORT_TTL_S)
    assert not standby.held()
    started = time.monotonic()
    _wait_for(standby.held, timeout_s=5)
    assert time.monotonic() - started >= SHORT_TTL_S / 2  # not before the crashed one's lease lapsed
    # the holder restarted under its own name takes its lease back without waiting
    restarted = NotificationLease(client, channel, "host-b:two", ttl_s=30)
    assert restarted.held()


def test_a_tenure_counts_from_when_the_lease_was_taken(client: redis.Redis, channel: str) -> None:
    now = [100.0]
    lease = NotificationLease(client, channel, "host-a:one", ttl_s=30, clock=lambda: now[0])
    assert not lease.held_since(99.0)  # taken at 100: notifications from 99 were not ours
    assert lease.held_since(100.0)
    now[0] = 125.0  # renewed in time: the tenure goes on
    assert lease.held_since(100.0)
    client.delete(lease_key(channel))
    client.set(lease_key(channel), b"host-b:two")
    now[0] = 140.0
    assert not lease.held_since(100.0)


def _bridge(client: redis.Redis, channel: str, name: str) -> tuple[TykRedisBridge, CapturingPublisher]:
    publisher = CapturingPublisher()
    bridge = TykRedisBridge(
        AnalyticsListStore(client, analytics_lists("analytics-", name, "")),
        cast(BridgePublisher, publisher),
        FirehoseConverter(KeyDigester(b"deployment-key")),
        notifications=NotificationListener(client, channel),
        lease=NotificationLease(client, channel, f"host:{name}", ttl_s=30),
    )
    return bridge, publisher


def _notify(client: redis.Redis, channel: str, payloads: list[str], listeners: int) -> None:
    for payload in payloads:
        note = '{"command":"ApiUpdated","payload":"' + payload + '","algorithm":0}'
        assert client.publish(channel, note) == listeners


def test_two_bridges_publish_each_notification_once(client: redis.Redis, channel: str) -> None:
    one, published_one = _bridge(client, channel, "one")
    two, published_two = _bridge(client, channel, "two")
    bridges = (one, two)
    stop = threading.Event()
    try:
        for bridge in bridges:  # subscribed and past the first look at the lease
            bridge.forward_notifications(0.05, stop)
        first = [f"api-{i}" for i in range(50)]
        _notify(client, channel, first, listeners=2)

        def heard(expected: int) -> bool:
            for bridge in bridges:
                bridge.forward_notifications(0.01, stop)
            return all(b.stats.notices + b.stats.set_aside_notices >= expected for b in bridges)

        _wait_for(lambda: heard(len(first)))
        # one bridge published every notification, the other set every one aside
        assert sorted(published_one.payloads + published_two.payloads) == sorted(first)
        holder, standby = (one, two) if published_one.payloads else (two, one)
        assert (holder.stats.notices, holder.stats.set_aside_notices) == (50, 0)
        assert (standby.stats.notices, standby.stats.set_aside_notices) == (0, 50)

        # a clean stop hands the notifications over: the other bridge carries what follows
        holder.finish()
        assert holder.notifications is not None
        holder.notifications.close()
        standby_lease = standby.lease
        assert standby_lease is not None
        _wait_for(standby_lease.held, timeout_s=3)
        standby.forward_notifications(0.01, stop)  # the new tenure covers what arrives from now on
        then = [f"after-{i}" for i in range(20)]
        _notify(client, channel, then, listeners=1)
        _wait_for(_polled(standby, stop, lambda: standby.stats.notices >= 20))
        carried = published_one.payloads + published_two.payloads
        assert sorted(carried) == sorted(first + then)
    finally:
        for bridge in bridges:
            if bridge.notifications is not None:
                bridge.notifications.close()


def test_a_lease_that_vanished_is_a_new_tenure_and_the_old_holder_stops_at_once(
    client: redis.Redis, channel: str
) -> None:
    # Found by attack: after a DEL (or a Redis restart) the standby took the lease within a second
    # while the holder went on publishing on its own count for up to ttl/3: ~700 notifications
    # published twice per deletion.
    holder = NotificationLease(client, channel, "host-a:one", ttl_s=30)
    standby = NotificationLease(client, channel, "host-b:two", ttl_s=30)
    assert holder.held()
    before = holder.clock()
    assert holder.held_since(before)
    client.delete(lease_key(channel))
    _wait_for(standby.held, timeout_s=3)
    assert not holder.held_since(before)  # asked of Redis before publishing: no longer its own
    client.delete(lease_key(channel))
    standby.give_up()
    # taken again by the same bridge after it vanished: a new tenure, so what arrived before is
    # set aside (the standby may have published it meanwhile)
    assert not holder.held_since(before)
    assert holder.held_since(holder.clock())


def test_a_backlog_over_one_poll_at_a_takeover_is_set_aside_whole(
    client: redis.Redis, channel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by attack: a standby (SIGSTOPped) with 15,000 notifications queued set aside the first
    # 10,000 (one poll) after it took over, then published the 5,000 behind them, which the old
    # holder had published already.
    monkeypatch.setattr(tyk_redis, "POLL_LIMIT", 50)
    one, published_one = _bridge(client, channel, "one")
    two, published_two = _bridge(client, channel, "two")
    stop = threading.Event()
    try:
        for bridge in (one, two):
            bridge.forward_notifications(0.05, stop)
        backlog = [f"old-{i}" for i in range(120)]
        _notify(client, channel, backlog, listeners=2)
        _wait_for(_polled(one, stop, lambda: one.stats.notices >= 120))
        one.finish()  # `two` never polled meanwhile: all 120 wait in its subscription
        assert one.notifications is not None
        one.notifications.close()
        lease = two.lease
        assert lease is not None
        _wait_for(_polled(two, stop, lambda: two.stats.set_aside_notices >= 120))
        _wait_for(lease.held, timeout_s=3)
        fresh = [f"new-{i}" for i in range(30)]
        _notify(client, channel, fresh, listeners=1)
        _wait_for(_polled(two, stop, lambda: two.stats.notices >= 30))
        assert sorted(published_one.payloads) == sorted(backlog)
        assert sorted(published_two.payloads) == sorted(fresh)
        assert two.stats.set_aside_notices == 120
    finally:
        for bridge in (one, two):
            if bridge.notifications is not None:
                bridge.notifications.close()
