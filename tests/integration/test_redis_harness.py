"""The Redis harness against a real redis-server, driven the way Tyk uses Redis.

Gateway write path: one pipeline (not MULTI) with one RPUSH per encoded record, then the
purger's EXPIRE 60 on a key without TTL. Pump read path: MULTI/EXEC LRANGE 0 -1 + DEL, or
with purge_chunk N: MULTI/EXEC LRANGE 0 N-1 + LTRIM N -1. Control plane: PUBLISH of the
Notification JSON on tyk.cluster.notifications.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis

from tests.harness.redis import RedisServer, RedisServerError

pytestmark = pytest.mark.integration


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tyk"
MANIFEST = json.loads((FIXTURES / "analytics" / "manifest.json").read_text(encoding="utf-8"))
NOTIFICATIONS = json.loads((FIXTURES / "notifications.json").read_text(encoding="utf-8"))
CHANNEL = "tyk.cluster.notifications"


def _elements(kind: str) -> list[bytes]:
    return [(FIXTURES / e[f"{kind}_file"]).read_bytes() for e in MANIFEST["records"]]


@pytest.fixture
def client(redis_server: RedisServer) -> Any:
    c = redis.Redis.from_url(redis_server.url)
    c.flushdb()
    try:
        yield c
    finally:
        c.close()


def _gateway_flush(c: redis.Redis, key: str, elements: list[bytes]) -> None:
    """What the gateway's analytics worker + TTL purger do for one buffer."""
    pipe = c.pipeline(transaction=False)
    for element in elements:
        pipe.rpush(key, element)
    assert pipe.execute() == list(range(1, len(elements) + 1))
    assert c.ttl(key) == -1  # RPUSH never sets a TTL ...
    assert c.expire(key, 60) is True  # ... so the purger applies storage_expiration_time
    assert 0 < c.ttl(key) <= 60


@pytest.mark.parametrize("kind", ["msgpack", "protobuf"])
def test_analytics_list_round_trip(client: redis.Redis, kind: str) -> None:
    key = MANIFEST[f"redis_key_{kind}"]
    elements = _elements(kind)
    _gateway_flush(client, key, elements)

    # Tyk Pump, purge_chunk = 0: MULTI; LRANGE key 0 -1; DEL key; EXEC.
    tx = client.pipeline(transaction=True)
    tx.lrange(key, 0, -1)
    tx.delete(key)
    got, deleted = tx.execute()

    assert deleted == 1
    assert client.exists(key) == 0
    assert got == elements  # byte for byte, in RPUSH order
    for raw, entry in zip(got, MANIFEST["records"], strict=True):
        assert hashlib.sha256(raw).hexdigest() == entry[f"{kind}_sha256"]
    if kind == "msgpack":
        decoded = [msgpack.unpackb(raw, raw=False) for raw in got]
        assert [d["APIID"] for d in decoded] == [e["record"]["api_id"] for e in MANIFEST["records"]]


def test_analytics_chunked_drain(client: redis.Redis) -> None:
    key = MANIFEST["redis_key_msgpack"]
    elements = _elements("msgpack")
    _gateway_flush(client, key, elements)

    # Tyk Pump, purge_chunk = 4: MULTI; LRANGE key 0 3; LTRIM key 4 -1; EXEC; then EXPIRE.
    drained: list[bytes] = []
    while True:
        tx = client.pipeline(transaction=True)
        tx.lrange(key, 0, 3)
        tx.ltrim(key, 4, -1)
        chunk, _ = tx.execute()
        if not chunk:
            break
        drained.extend(chunk)
        client.expire(key, 60)
    assert drained == elements
    assert client.exists(key) == 0


def test_notifications_pubsub(redis_server: RedisServer) -> None:
    sub_client = redis.Redis.from_url(redis_server.url)
    pub_client = redis.Redis.from_url(redis_server.url)
    pubsub = sub_client.pubsub()
    try:
        pubsub.subscribe(CHANNEL)
        confirm = pubsub.get_message(timeout=5.0)
        assert confirm is not None
        assert confirm["type"] == "subscribe"  # subscribed before anything is published

        wires = [m["wire"].encode() for m in NOTIFICATIONS["messages"]]
        for wire in wires:
            assert pub_client.publish(CHANNEL, wire) == 1  # exactly our subscriber

        received: list[bytes] = []
        deadline = time.monotonic() + 10.0
        while len(received) < len(wires) and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                assert message["channel"] == CHANNEL.encode()
                received.append(message["data"])
        assert received == wires

        note = json.loads(received[0])
        secret = NOTIFICATIONS["node_secret"]
        digest = hashlib.sha256((note["command"] + note["payload"] + secret).encode()).hexdigest()
        assert note["algorithm"] == 5
        assert digest == note["signature"]
    finally:
        pubsub.close()
        sub_client.close()
        pub_client.close()


def running(server: RedisServer) -> bool:
    # read afresh: mypy would keep the earlier `assert server.running` narrowing across stop()
    return server.running


def test_server_lifecycle() -> None:
    with RedisServer() as server:
        assert server.running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        data_dir = server.dir
        assert data_dir is not None
        assert data_dir.is_dir()
        c = redis.Redis.from_url(server.url)
        try:
            assert c.ping() is True
            assert c.config_get("save") == {"save": ""}
            assert c.config_get("appendonly") == {"appendonly": "no"}
        finally:
            c.close()
        port = server.port
    assert not running(server)
    assert not data_dir.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        pass
    server.stop()  # idempotent


def test_start_failure_reports_log_tail() -> None:
    server = RedisServer(extra_args=["--maxmemory-policy", "not-a-policy"])
    expected = r"(?s)did not become ready \(redis-server exited with code 1\).*log tail.*maxmemory-policy"
    with pytest.raises(RedisServerError, match=expected):
        server.start()
    assert not server.running
    assert server.dir is None


def test_stop_escalates_to_signals_when_server_hangs() -> None:
    server = RedisServer(shutdown_timeout=0.5).start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # our own child: SHUTDOWN NOSAVE now gets no answer
    started = time.monotonic()
    server.stop()
    assert not server.running
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
