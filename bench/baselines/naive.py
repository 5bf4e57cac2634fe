"""The naive worker: what a quick Faust agent does.

Every record is decoded to a dict and folded into per-key Python dicts; every
second, in the receive loop, the quantiles are computed by sorting each key's
latencies and the finalized rows are inserted. Same rollups as tykpulse's
traffic and rate_limit_hits, same embedded ClickHouse.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

import clickhouse_connect
import msgpack

from bench.baselines.consumer import LossCounter, arguments, serve
from bench.e2e import count
from pipelines.firehose.protocol import RATE_LIMIT_EVENTS

_DDL: Final = (
    "CREATE DATABASE IF NOT EXISTS naive",
    "CREATE TABLE IF NOT EXISTS naive.traffic (window_start DateTime('UTC'), org_id String, api_id String, "
    "requests UInt64, status_4xx UInt64, status_429 UInt64, status_5xx UInt64, latency_p50_ms Float64, "
    "latency_p95_ms Float64, latency_p99_ms Float64) ENGINE = MergeTree "
    "ORDER BY (window_start, org_id, api_id)",
    "CREATE TABLE IF NOT EXISTS naive.rate_limit_hits (window_start DateTime('UTC'), org_id String, "
    "api_id String, event_type String, hits UInt64, distinct_keys UInt64) ENGINE = MergeTree "
    "ORDER BY (window_start, org_id, api_id)",
)
_LANDED: Final = (
    "SELECT (SELECT sum(requests) FROM naive.traffic) + (SELECT sum(hits) FROM naive.rate_limit_hits)"
)


def _nearest_rank(values: list[int], q: float) -> float:
    return float(values[max(1, math.ceil(q * len(values))) - 1])


class NaiveConsumer:
    def __init__(self, dsn: str) -> None:
        self.client = clickhouse_connect.get_client(dsn=dsn)
        for statement in _DDL:
            self.client.command(statement)
        self.counter = LossCounter()
        self.records = 0
        self.traffic: dict[tuple[int, str, str], list[Any]] = {}
        self.limits: dict[tuple[int, str, str, str], list[Any]] = {}
        self.next_flush = time.monotonic() + 1.0

    def on_message(self, frames: list[bytes]) -> None:
        env = msgpack.unpackb(frames[1])
        self.counter.observe(env["node"], env["boot"], env["seq"])
        topic = frames[0].decode()
        for record in msgpack.unpackb(frames[2]):
            if topic == "tyk.analytics":
                self._analytics(record)
            elif topic.startswith("tyk.event."):
                self._event(record)
            else:
                continue
            self.records += 1

    def _analytics(self, record: dict[str, Any]) -> None:
        window = record["timestamp"] // 60_000_000_000 * 60
        key = (window, record["org_id"], record["api_id"])
        agg = self.traffic.get(key)
        if agg is None:
            agg = self.traffic[key] = [0, 0, 0, 0, []]
        code = record["response_code"]
        agg[0] += 1
        agg[1] += 400 <= code <= 499
        agg[2] += code == 429
        agg[3] += 500 <= code <= 599
        agg[4].append(record["latency"]["total"])

    def _event(self, record: dict[str, Any]) -> None:
        if record["event"] not in RATE_LIMIT_EVENTS:
            return
        window = record["timestamp"] // 60_000_000_000 * 60
        key = (window, record["org_id"], record.get("api_id", ""), record["event"])
        agg = self.limits.get(key)
        if agg is None:
            agg = self.limits[key] = [0, set()]
        agg[0] += 1
        if record.get("key"):
            agg[1].add(hash(record["key"]))

    def on_tick(self) -> None:
        if time.monotonic() >= self.next_flush:
            self.flush()
            self.next_flush = time.monotonic() + 1.0

    def flush(self) -> None:
        traffic, self.traffic = self.traffic, {}
        limits, self.limits = self.limits, {}
        rows = []
        for (window, org, api), (n, s4, s429, s5, latencies) in traffic.items():
            latencies.sort()
            quantiles = [_nearest_rank(latencies, q) for q in (0.5, 0.95, 0.99)]
            rows.append([window, org, api, n, s4, s429, s5, *quantiles])
        if rows:
            self.client.insert("naive.traffic", rows)
        limit_rows = [[*key, hits, len(keys)] for key, (hits, keys) in limits.items()]
        if limit_rows:
            self.client.insert("naive.rate_limit_hits", limit_rows)

    def finish(self) -> dict[str, Any]:
        self.flush()
        landed = count(self.client, _LANDED)
        self.client.close()
        c = self.counter
        return {"messages": c.messages, "lost": c.lost, "records": self.records, "landed": landed}


if __name__ == "__main__":
    parser = arguments(__doc__ or "")
    parser.add_argument("--clickhouse", required=True)
    args = parser.parse_args()
    serve(NaiveConsumer(args.clickhouse), args)
