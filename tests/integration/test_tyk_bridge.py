"""A real Redis loaded exactly as Tyk writes it -> `tykpulse bridge tyk` -> proxy -> worker -> chDB.

Redis gets Tyk Pump's own fixture bytes the way a gateway writes them (one pipelined RPUSH per
record, then EXPIRE 60 on keys without a TTL), spread over the plain, `_0`..`_9` and `_protobuf`
lists; the fixture notifications are PUBLISHed on `tyk.cluster.notifications`. Three processes
(bridge, proxy, worker) move it into embedded ClickHouse. The expected rollups are computed here
from the fixture manifest alone, not from anything the code under test produced.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import clickhouse_connect
import msgspec
import pytest
import redis

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.publishing import BridgePublisher
from pipelines.bridges.tyk_lists import AnalyticsListStore, analytics_lists
from pipelines.bridges.tyk_records import FirehoseConverter
from pipelines.bridges.tyk_redis import TykRedisBridge
from tests.harness.processes import free_port, stop_process
from tests.harness.redis import RedisServer
from tests.harness.tykpulse import tykpulse as harness_tykpulse
from tests.helpers import protobuf_field, varint
from tests.integration.test_tyk_notice_digests import CapturingPublisher

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tyk"
MANIFEST = json.loads((FIXTURES / "analytics" / "manifest.json").read_text(encoding="utf-8"))
RECORDS: list[dict[str, Any]] = MANIFEST["records"]
NOTIFICATIONS = json.loads((FIXTURES / "notifications.json").read_text(encoding="utf-8"))
COPIES = 40  # each fixture record goes into Redis this many times per encoding
SHARDS = ["", *(f"_{i}" for i in range(10))]
NODE = "tyk-bridge-e2e"
INT64 = 2**63


tykpulse = functools.partial(harness_tykpulse, log_level="info")  # the log lines are read


def gateway_writes(client: redis.Redis) -> None:
    """RPUSH per record in one pipeline per key, then the gateway's TTL guard (msgpack keys only)."""
    per_key: dict[str, list[bytes]] = collections.defaultdict(list)
    for copy in range(COPIES):
        shard = SHARDS[copy % len(SHARDS)]
        for entry in RECORDS:
            per_key[f"analytics-tyk-system-analytics{shard}"].append(
                (FIXTURES / entry["msgpack_file"]).read_bytes()
            )
            per_key[f"analytics-tyk-system-analytics{shard}_protobuf"].append(
                (FIXTURES / entry["protobuf_file"]).read_bytes()
            )
    for key, elements in per_key.items():
        pipe = client.pipeline(transaction=False)
        for element in elements:
            pipe.rpush(key, element)
        pipe.execute()
        if not key.endswith("_protobuf") and client.ttl(key) == -1:
            client.expire(key, 60)


def wait_until(predicate: Any, timeout_s: float, what: str, procs: list[subprocess.Popen[Any]]) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        for proc in procs:
            assert proc.poll() is None, (
                f"{cast('list[str]', proc.args)[4:6]} exited with {proc.returncode} while waiting for {what}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def analytics_keys(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match="analytics-tyk-system-analytics*"))


@pytest.fixture(scope="module")
def bridged(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tyk-bridge")
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    client = redis.Redis.from_url(url)
    client.flushdb()
    gateway_writes(client)
    front, back = free_port(), free_port()
    dsn = f"chdb://{tmp / 'clickhouse'}"
    logs = {name: (tmp / f"{name}.log").open("wb") for name in ("proxy", "worker", "bridge")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["proxy"] = subprocess.Popen(
            tykpulse(
                "proxy", "--frontend", f"@tcp://127.0.0.1:{front}", "--backend", f"@tcp://127.0.0.1:{back}"
            ),
            stdout=logs["proxy"],
            stderr=subprocess.STDOUT,
        )
        procs["worker"] = subprocess.Popen(
            tykpulse(
                "run",
                "--firehose",
                f"tcp://127.0.0.1:{back}",
                "--clickhouse",
                dsn,
                "--flush-interval-s",
                "0.5",
                "--drain-timeout-s",
                "1",
                # the fixtures were recorded from a real Tyk long ago: lift the record-age bound
                "--max-past-s",
                str(5 * 365 * 86_400),
            ),
            stdout=logs["worker"],
            stderr=subprocess.STDOUT,
        )
        procs["bridge"] = subprocess.Popen(
            tykpulse(
                "bridge",
                "tyk",
                "--redis",
                url,
                "--connect",
                f"tcp://127.0.0.1:{front}",
                "--node",
                NODE,
                "--drain-batch",
                "150",
                "--message-records",
                "40",
                "--poll-interval-s",
                "0.05",
            ),
            stdout=logs["bridge"],
            stderr=subprocess.STDOUT,
        )
        running = list(procs.values())
        channel = NOTIFICATIONS["channel"]
        wait_until(lambda: client.pubsub_numsub(channel)[0][1] >= 1, 60, "the bridge's subscription", running)
        for note in NOTIFICATIONS["messages"]:
            assert client.publish(channel, note["wire"]) == 1
        # Drained = every source list and every processing list gone (deleted after publishing).
        wait_until(lambda: not analytics_keys(client), 120, "Redis to be drained", running)
        for name in ("bridge", "worker", "proxy"):
            assert stop_process(procs[name], 60), name
            assert procs[name].returncode == 0, f"{name} exited {procs[name].returncode}"
    finally:
        for proc in procs.values():
            stop_process(proc, 10)
        for log in logs.values():
            log.close()
        client.close()
    ch = clickhouse_connect.get_client(dsn=dsn)
    try:
        yield {"ch": ch, "bridge_log": (tmp / "bridge.log").read_text(errors="replace")}
    finally:
        ch.close()


def nearest_rank(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[max(1, math.ceil(q * len(ordered))) - 1])


def expected_traffic() -> dict[tuple[int, str, str], dict[str, Any]]:
    """The traffic_1m rows, from the manifest: records with a valid instant that are requests."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for entry in RECORDS:
        ts, rec = entry["timestamp_unix_ns"], entry["record"]
        if not 0 <= ts < INT64 or rec["response_code"] < 0:
            continue  # pre-epoch/zero times are rejected by the worker; -1 is a TCP stats record
        window = ts // 10**9 // 60 * 60
        groups[(window, rec["org_id"], rec["api_id"])] += [rec] * (COPIES * 2)
    out = {}
    for key, recs in groups.items():
        codes = [r["response_code"] for r in recs]
        totals = [r["latency"]["total"] for r in recs]
        out[key] = {
            "requests": len(recs),
            "status_4xx": sum(400 <= c < 500 for c in codes),
            "status_429": sum(c == 429 for c in codes),
            "status_5xx": sum(500 <= c < 600 for c in codes),
            "latency_p50_ms": nearest_rank(totals, 0.5),
            "latency_p95_ms": nearest_rank(totals, 0.95),
            "latency_p99_ms": nearest_rank(totals, 0.99),
        }
    return out


def test_traffic_matches_the_fixtures_ground_truth(bridged: dict[str, Any]) -> None:
    result = bridged["ch"].query("SELECT *, toUnixTimestamp(window_start) AS ws FROM tykpulse.traffic_1m")
    actual = {}
    for row in result.result_rows:
        rec = dict(zip(result.column_names, row, strict=True))
        actual[(rec["ws"], rec["org_id"], rec["api_id"])] = rec
    expected = expected_traffic()
    assert len(expected) >= 7
    assert set(actual) == set(expected)
    for key, exp in expected.items():
        got = actual[key]
        for column, value in exp.items():
            if column.startswith("latency_p"):
                assert abs(got[column] - value) <= 0.01 * value, (key, column, got[column], value)
            else:
                assert got[column] == value, (key, column, got[column], value)


def test_invalid_instants_are_counted_rejections(bridged: dict[str, Any]) -> None:
    bad = [e for e in RECORDS if not 0 <= e["timestamp_unix_ns"] < INT64]
    assert {e["name"] for e in bad} == {"zero_timestamp", "pre_epoch_timestamp"}
    rows = (
        bridged["ch"]
        .query("SELECT node_id, reason, sum(rejected) FROM tykpulse.ingest_rejections_1m GROUP BY ALL")
        .result_rows
    )
    assert rows == [(NODE, "bad_timestamp", len(bad) * COPIES * 2)]


def test_every_record_and_notice_arrived_once(bridged: dict[str, Any]) -> None:
    rows = (
        bridged["ch"]
        .query(
            "SELECT node_id, sum(records), sum(lost_messages) FROM tykpulse.ingest_health_1m GROUP BY node_id"
        )
        .result_rows
    )
    analytics = len(RECORDS) * COPIES * 2
    notices = len(NOTIFICATIONS["messages"])
    bad = sum(not 0 <= e["timestamp_unix_ns"] < INT64 for e in RECORDS) * COPIES * 2
    assert rows == [(NODE, analytics + notices - bad, 0)]
    assert (
        f"moved={analytics} published={analytics} recovered=0 undecodable=0 notices={notices}"
        in (bridged["bridge_log"])
    )


def test_notifications_became_config_changes(bridged: dict[str, Any]) -> None:
    rows = (
        bridged["ch"]
        .query(
            "SELECT command, node_id, sum(changes) FROM tykpulse.config_changes_1m GROUP BY command, node_id"
        )
        .result_rows
    )
    # a DRL heartbeat names the gateway that sent it (`ID`, fact sheet 4.3); every other notice the bridge
    expected = collections.Counter(
        (m["decoded"]["command"], json.loads(m["decoded"]["payload"])["ID"])
        if m["decoded"]["command"] == "NoticeGatewayDRLNotification"
        else (m["decoded"]["command"], NODE)
        for m in NOTIFICATIONS["messages"]
    )
    assert {(command, node): n for command, node, n in rows} == dict(expected)


# ---------------------------------------------------------------- hostile elements (in-process bridge)

HOSTILE_DB = "/9"


@pytest.fixture
def hostile_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + HOSTILE_DB)
    c.flushdb()
    try:
        yield c
    finally:
        c.flushdb()
        c.close()


def good_msgpack(i: int) -> bytes:
    now = int(time.time())
    return msgspec.msgpack.encode(
        {
            "APIKey": f"rawkey{i}",
            "OrgID": "o",
            "APIID": "a",
            "ResponseCode": 200,
            "Path": f"/good{i}",
            "TimeStamp": [now, 0],
        }
    )


def drain_in_process(client: redis.Redis) -> tuple[TykRedisBridge, CapturingPublisher]:
    """One drain of every analytics list by an in-process bridge publishing into a capture, then a release."""
    publisher = CapturingPublisher()
    bridge = TykRedisBridge(
        AnalyticsListStore(client, analytics_lists()),
        cast(BridgePublisher, publisher),
        FirehoseConverter(KeyDigester(b"salt")),
    )
    bridge.drain_once(threading.Event())
    bridge.release_due(time.time_ns() + 10**12)
    return bridge, publisher


def published_paths(publisher: CapturingPublisher) -> list[str]:
    return [r["path"] for topic, records in publisher.published if topic == "tyk.analytics" for r in records]


def test_an_element_nested_too_deep_is_counted_and_its_neighbours_published(
    hostile_client: redis.Redis,
) -> None:
    # a map whose one value is 5 000 nested 1-element arrays: RecursionError inside msgspec (5 KB)
    deep = b"\x81" + msgspec.msgpack.encode("X") + b"\x91" * 5000 + b"\xc0"
    hostile_client.rpush("analytics-tyk-system-analytics", good_msgpack(1), deep, good_msgpack(2))
    bridge, publisher = drain_in_process(hostile_client)
    assert published_paths(publisher) == ["/good1", "/good2"]
    assert (bridge.stats.moved, bridge.stats.published, bridge.stats.undecodable) == (3, 2, 1)
    assert not analytics_keys(hostile_client)  # nothing left stuck in a processing list


def pb_record(path: str, **varints: int) -> bytes:
    """A protobuf record: org o, api a, response 200, now, with `varints` as {field number: value}."""
    now = int(time.time())
    data = protobuf_field(12, 2, path.encode()) + protobuf_field(17, 2, b"o") + protobuf_field(16, 2, b"a")
    data += protobuf_field(3, 2, path.encode()) + protobuf_field(13, 2, protobuf_field(1, 0, varint(now)))
    fields = {11: 200} | {int(k.lstrip("f")): v for k, v in varints.items()}
    return data + b"".join(protobuf_field(n, 0, varint(v)) for n, v in fields.items())


def test_protobuf_integers_beyond_their_field_type_are_counted(hostile_client: redis.Redis) -> None:
    elements = [
        pb_record("/good1"),
        pb_record("/bad1", f5=2**70 - 1),  # ContentLength: a 70-bit varint (OverflowError at publish before)
        pb_record("/bad2", f11=2**40),  # ResponseCode is an int32
        pb_record("/good2", f5=2**64 - 1),  # ContentLength -1: int64 as two's complement, in range
    ]
    hostile_client.rpush("analytics-tyk-system-analytics_protobuf", *elements)
    bridge, publisher = drain_in_process(hostile_client)
    assert published_paths(publisher) == ["/good1", "/good2"]
    assert (bridge.stats.moved, bridge.stats.published, bridge.stats.undecodable) == (4, 2, 2)
    assert not analytics_keys(hostile_client)


def test_a_key_of_another_type_is_skipped_counted_and_the_other_lists_drained(
    hostile_client: redis.Redis,
) -> None:
    # A failing call would abort the move script half done: no list drained, earlier ones parked
    # again on every retry while Tyk's TTL expires the rest.
    hostile_client.rpush("analytics-tyk-system-analytics", good_msgpack(1))
    hostile_client.set("analytics-tyk-system-analytics_3", b"not a list")
    hostile_client.hset("analytics-tyk-system-analytics_4:tykpulse-processing", "f", "v")
    hostile_client.rpush("analytics-tyk-system-analytics_4", good_msgpack(4))
    hostile_client.rpush("analytics-tyk-system-analytics_5", good_msgpack(5))
    bridge, publisher = drain_in_process(hostile_client)
    assert published_paths(publisher) == ["/good1", "/good5"]
    assert (bridge.stats.moved, bridge.stats.published, bridge.stats.skipped_lists) == (2, 2, 2)
    assert bridge.stats.redis_errors == 0
    # the skipped lists are left as they were, for whoever put them there
    assert hostile_client.get("analytics-tyk-system-analytics_3") == b"not a list"
    assert hostile_client.llen("analytics-tyk-system-analytics_4") == 1
    assert hostile_client.llen("analytics-tyk-system-analytics:tykpulse-processing") == 0
