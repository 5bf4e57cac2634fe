"""The ClickHouse-native design: insert raw decoded records, let materialized views roll up.

Records are decoded (msgspec, every column Tyk Pump's ClickHouse pump keeps)
and inserted raw, once a second, from a flush thread so that receiving goes on
meanwhile. Materialized views aggregate each inserted block into tykpulse's own
`_in` tables, so the same state tables and views hold the result: the views
are directly comparable with tykpulse's.
"""

from __future__ import annotations

import operator
import threading
from typing import Any, Final

import clickhouse_connect
import msgspec
import pyarrow as pa

from bench.baselines.consumer import LossCounter, arguments, serve
from bench.e2e import LANDED_SQL, count
from pipelines.firehose.protocol import RATE_LIMIT_EVENTS, Envelope
from sinks.clickhouse.contract import LATENCY_GAMMA
from sinks.clickhouse.sink import apply_schema


class Latency(msgspec.Struct):
    total: int = 0
    upstream: int = 0
    gateway: int = 0


class RawAnalytics(msgspec.Struct):
    timestamp: int
    org_id: str
    api_id: str
    response_code: int
    method: str = ""
    host: str = ""
    path: str = ""
    raw_path: str = ""
    content_length: int = 0
    user_agent: str = ""
    api_key: str = ""
    api_version: str = ""
    api_name: str = ""
    oauth_id: str = ""
    request_time: int = 0
    ip_address: str = ""
    tags: list[str] = []
    alias: str = ""
    track_path: bool = False
    original_path: str = ""
    listen_path: str = ""
    latency: Latency = msgspec.field(default_factory=Latency)


class RawEvent(msgspec.Struct):
    event: str
    timestamp: int
    org_id: str
    api_id: str = ""
    key: str = ""
    origin: str = ""
    path: str = ""
    message: str = ""


_SCALARS: Final = [f for f in RawAnalytics.__struct_fields__ if f not in ("timestamp", "tags", "latency")]
_ANALYTICS_COLUMNS: Final = {
    "timestamp": "DateTime64(9, 'UTC')",
    "org_id": "String",
    "api_id": "String",
    "response_code": "Int64",
    **{f: "String" for f in _SCALARS if RawAnalytics.__annotations__[f] == "str"},
    "content_length": "Int64",
    "request_time": "Int64",
    "track_path": "Bool",
    "tags": "Array(String)",
    "latency_total": "Int64",
    "latency_upstream": "Int64",
}
_BUCKET: Final = (
    "if(latency_total >= 1, "
    f"toUInt16(ceil(log(least(latency_total, 2147483647)) / log({LATENCY_GAMMA}))) + 1, toUInt16(0))"
)
_DDL: Final = (
    "CREATE DATABASE IF NOT EXISTS native",
    "CREATE TABLE IF NOT EXISTS native.analytics ("
    + ", ".join(f"{name} {kind}" for name, kind in _ANALYTICS_COLUMNS.items())
    + ") ENGINE = MergeTree ORDER BY (org_id, api_id, timestamp)",
    "CREATE TABLE IF NOT EXISTS native.events (event LowCardinality(String), timestamp DateTime64(9, 'UTC'), "
    "org_id String, api_id String, key String, origin String, path String, message String) "
    "ENGINE = MergeTree ORDER BY (org_id, event, timestamp)",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS native.traffic_mv TO tykpulse.traffic_in AS "
    "SELECT window_start, org_id, api_id, requests, status_4xx, status_429, status_5xx, "
    "hist.1 AS latency_buckets, hist.2 AS latency_counts FROM ("
    "SELECT toStartOfMinute(timestamp) AS window_start, org_id, api_id, count() AS requests, "
    "countIf(response_code BETWEEN 400 AND 499) AS status_4xx, countIf(response_code = 429) AS status_429, "
    "countIf(response_code BETWEEN 500 AND 599) AS status_5xx, "
    f"sumMap([{_BUCKET}], [toUInt64(1)]) AS hist "
    "FROM native.analytics WHERE response_code >= 0 GROUP BY window_start, org_id, api_id)",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS native.rate_limit_mv TO tykpulse.rate_limit_hits_in AS "
    "SELECT toStartOfMinute(timestamp) AS window_start, org_id, api_id, event AS event_type, "
    "count() AS hits, "
    "groupUniqArrayIf(cityHash64(key), key != '') AS key_hashes FROM native.events "
    f"WHERE event IN {tuple(RATE_LIMIT_EVENTS)} GROUP BY window_start, org_id, api_id, event_type",
)


def _analytics_table(records: list[RawAnalytics]) -> pa.Table:
    columns: dict[str, Any] = {
        name: list(map(operator.attrgetter(name), records))
        for name in _ANALYTICS_COLUMNS
        if name not in ("latency_total", "latency_upstream")
    }
    columns["timestamp"] = pa.array(columns["timestamp"], pa.timestamp("ns", "UTC"))
    latencies = list(map(operator.attrgetter("latency"), records))
    columns["latency_total"] = list(map(operator.attrgetter("total"), latencies))
    columns["latency_upstream"] = list(map(operator.attrgetter("upstream"), latencies))
    return pa.table(columns)


def _events_table(records: list[RawEvent]) -> pa.Table:
    columns: dict[str, Any] = {
        name: list(map(operator.attrgetter(name), records)) for name in RawEvent.__struct_fields__
    }
    columns["timestamp"] = pa.array(columns["timestamp"], pa.timestamp("ns", "UTC"))
    return pa.table(columns)


class NativeConsumer:
    def __init__(self, dsn: str) -> None:
        self.client = clickhouse_connect.get_client(dsn=dsn)
        apply_schema(self.client, "tykpulse")
        for statement in _DDL:
            self.client.command(statement)
        self.envelope = msgspec.msgpack.Decoder(Envelope).decode
        self.decode_analytics = msgspec.msgpack.Decoder(list[RawAnalytics]).decode
        self.decode_events = msgspec.msgpack.Decoder(list[RawEvent]).decode
        self.counter = LossCounter()
        self.records = 0
        self.analytics: list[RawAnalytics] = []
        self.events: list[RawEvent] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.flusher = threading.Thread(target=self._flush_every_second, daemon=True)
        self.flusher.start()

    def on_message(self, frames: list[bytes]) -> None:
        env = self.envelope(frames[1])
        self.counter.observe(env.node, env.boot, env.seq)
        topic = frames[0]
        if topic == b"tyk.analytics":
            records: list[Any] = self.decode_analytics(frames[2])
            with self.lock:
                self.analytics.extend(records)
        elif topic.startswith(b"tyk.event."):
            records = self.decode_events(frames[2])
            with self.lock:
                self.events.extend(records)
        else:
            return
        self.records += len(records)

    def on_tick(self) -> None:
        pass

    def _flush_every_second(self) -> None:
        while not self.stop.wait(1.0):
            self.flush()

    def flush(self) -> None:
        with self.lock:
            analytics, self.analytics = self.analytics, []
            events, self.events = self.events, []
        if analytics:
            self.client.insert_arrow("native.analytics", _analytics_table(analytics))
        if events:
            self.client.insert_arrow("native.events", _events_table(events))

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        self.flusher.join()
        self.flush()
        landed = count(self.client, LANDED_SQL)
        self.client.close()
        c = self.counter
        return {"messages": c.messages, "lost": c.lost, "records": self.records, "landed": landed}


if __name__ == "__main__":
    parser = arguments(__doc__ or "")
    parser.add_argument("--clickhouse", required=True)
    args = parser.parse_args()
    serve(NativeConsumer(args.clickhouse), args)
