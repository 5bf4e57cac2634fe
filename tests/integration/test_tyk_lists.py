"""The bridge's Redis operations (pipelines/bridges/tyk_lists.py) on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from pipelines.bridges.tyk_lists import AnalyticsListStore, analytics_lists
from tests.harness.redis import RedisServer

pytestmark = pytest.mark.integration

PLAIN = "analytics-tyk-system-analytics"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/7")
    c.flushdb()
    try:
        yield c
    finally:
        c.flushdb()
        c.close()


def test_the_22_lists_tyk_writes() -> None:
    lists = analytics_lists()
    assert len(lists) == 22
    assert [lst.key for lst in lists[:2]] == [PLAIN, f"{PLAIN}_0"]
    assert lists[10].key == f"{PLAIN}_9"
    assert [lst.key for lst in lists[11:13]] == [f"{PLAIN}_protobuf", f"{PLAIN}_0_protobuf"]
    assert {lst.encoding for lst in lists[:11]} == {"msgpack"}
    assert {lst.encoding for lst in lists[11:]} == {"protobuf"}
    assert lists[0].processing == f"{PLAIN}:tykpulse-processing"
    assert analytics_lists(bridge_id="b2")[0].processing == f"{PLAIN}:tykpulse-processing:b2"
    assert analytics_lists(copy_prefix="pump-")[12].copy == "pump-tyk-system-analytics_0_protobuf"


def test_move_is_budgeted_ordered_and_parks(client: redis.Redis) -> None:
    client.rpush(PLAIN, *[b"a%d" % i for i in range(2500)])  # past the script's 1000-value RPUSH chunks
    client.rpush(f"{PLAIN}_3_protobuf", b"p0", b"p1")
    client.expire(PLAIN, 60)
    store = AnalyticsListStore(client, analytics_lists())
    held = store.move(2400)
    assert [(h.source.key, h.moved, h.recovered) for h in held] == [(PLAIN, 2400, 0)]
    assert held[0].elements == [b"a%d" % i for i in range(2400)]
    assert client.lrange(PLAIN, 0, -1) == [b"a%d" % i for i in range(2400, 2500)]
    assert 0 < client.ttl(PLAIN) <= 60  # LTRIM keeps Tyk's TTL
    assert client.llen(f"{PLAIN}:tykpulse-processing") == 2400
    held = store.move(1000)
    assert [(h.source.key, h.moved) for h in held] == [(PLAIN, 100), (f"{PLAIN}_3_protobuf", 2)]
    assert held[1].elements == [b"p0", b"p1"]
    assert client.exists(PLAIN, f"{PLAIN}_3_protobuf") == 0
    assert store.move(1000) == []


def test_recover_returns_what_is_parked_then_release_trims_the_front(client: redis.Redis) -> None:
    client.rpush(PLAIN, b"1", b"2", b"3", b"4", b"5")
    store = AnalyticsListStore(client, analytics_lists())
    first = store.move(2)
    second = store.move(2)
    assert [first[0].elements, second[0].elements] == [[b"1", b"2"], [b"3", b"4"]]
    # A new run recovers both parked batches (older first) plus the new element.
    recovered = store.move(10, recover=True)
    assert (recovered[0].elements, recovered[0].moved, recovered[0].recovered) == (
        [b"1", b"2", b"3", b"4", b"5"],
        1,
        4,
    )
    store.release([(f"{PLAIN}:tykpulse-processing", 2)])
    assert client.lrange(f"{PLAIN}:tykpulse-processing", 0, -1) == [b"3", b"4", b"5"]
    store.release([(f"{PLAIN}:tykpulse-processing", 3)])
    assert client.exists(f"{PLAIN}:tykpulse-processing") == 0


def test_pump_copy_gets_every_element_with_a_ttl(client: redis.Redis) -> None:
    client.rpush(f"{PLAIN}_5", *[b"m%d" % i for i in range(1200)])
    client.rpush(f"{PLAIN}_protobuf", b"pb")
    store = AnalyticsListStore(client, analytics_lists(copy_prefix="pump-"), copy_ttl_s=45)
    moved = [e for h in store.move(5000) for e in h.elements]
    assert client.lrange("pump-tyk-system-analytics_5", 0, -1) == [b"m%d" % i for i in range(1200)]
    assert client.lrange("pump-tyk-system-analytics_protobuf", 0, -1) == [b"pb"]
    assert 0 < client.ttl("pump-tyk-system-analytics_5") <= 45
    assert sorted(moved) == sorted([b"m%d" % i for i in range(1200)] + [b"pb"])
    # Tyk Pump reads its copy with MULTI LRANGE 0 -1 + DEL: it gets the exact bytes.
    pipe = client.pipeline(transaction=True)
    pipe.lrange("pump-tyk-system-analytics_5", 0, -1)
    pipe.delete("pump-tyk-system-analytics_5")
    assert pipe.execute()[0][:2] == [b"m0", b"m1"]


def test_store_refuses_mixed_copy_configuration(client: redis.Redis) -> None:
    lists = analytics_lists(copy_prefix="pump-")[:1] + analytics_lists()[1:]
    with pytest.raises(ValueError, match="copy"):
        AnalyticsListStore(client, lists)


def test_a_copy_key_of_another_type_skips_only_its_list(client: redis.Redis) -> None:
    client.rpush(PLAIN, b"a")
    client.rpush(f"{PLAIN}_1", b"b")
    client.sadd("pump-tyk-system-analytics_1", b"x")
    store = AnalyticsListStore(client, analytics_lists(copy_prefix="pump-"))
    held = store.move(100)
    assert [(h.source.key, h.elements) for h in held] == [(PLAIN, [b"a"])]
    assert store.skipped == [f"{PLAIN}_1"]
    assert client.lrange(f"{PLAIN}_1", 0, -1) == [b"b"]
    assert client.lrange("pump-tyk-system-analytics", 0, -1) == [b"a"]
    assert store.move(100) == []
    assert store.skipped == [f"{PLAIN}_1"]
