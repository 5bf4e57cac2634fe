"""The analyst API's numbers equal what the raw records say, on scenarios built to tell them apart.

Each scenario goes through the real path (firehose messages -> Ingestor ->
rollups -> ClickHouseSink) into embedded ClickHouse at fixed UTC times; the
expected numbers are worked out by hand from the records written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypedDict, Unpack

import pandas as pd
import pytest

from pipelines import analyst
from pipelines.ingest import Ingestor
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from sinks.clickhouse.sink import ClickHouseSink
from tests.helpers import analytics, event, message, notice

pytestmark = pytest.mark.component

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
MINUTE_NS = 60 * 10**9
T0_NS = int(T0.timestamp()) * 10**9


class Where(TypedDict, total=False):
    org: str
    api: str


class Records:
    """Messages at minute offsets from T0 (a few seconds into each minute)."""

    def __init__(self) -> None:
        self.ingestor = Ingestor(clock=lambda: T0_NS + 120 * MINUTE_NS, hasher=KeyHasher(b"salt"))
        self.seq: dict[str, int] = {}

    def send(self, topic: str, records: list[dict[str, Any]], *, minute: int, node: str = "gw1") -> None:
        at = T0_NS + minute * MINUTE_NS + 5 * 10**9
        for record in records:
            record["timestamp"] = at
        seq = self.seq.get(node, 0)
        self.seq[node] = seq + 1
        self.ingestor.ingest(message(topic, records, node=node, seq=seq, sent=at), received_ns=at)

    def requests(self, minute: int, latencies: dict[int, int], **where: Unpack[Where]) -> None:
        """`latencies`: latency ms -> how many requests took that long; `where`: org, api."""
        records = [analytics(0, latency=ms, **where) for ms, n in latencies.items() for _ in range(n)]
        self.send("tyk.analytics", records, minute=minute)

    def events(self, minute: int, name: str, keys: list[str], **where: Unpack[Where]) -> None:
        self.send(f"tyk.event.{name}", [event(name, 0, key=k, **where) for k in keys], minute=minute)


@pytest.fixture
def sink(tykpulse_sink: ClickHouseSink) -> ClickHouseSink:
    return tykpulse_sink


def write(sink: ClickHouseSink, records: Records) -> Any:
    sink.write(compute(records.ingestor.take()), "exactness")
    return sink.client


def test_change_impact_p95_is_the_p95_of_each_side(sink: ClickHouseSink) -> None:
    records = Records()
    # before the change (minutes 0-4): four calm minutes, one slow one: 100 of 500 requests at 1 s
    for minute in range(4):
        records.requests(minute, {10: 100})
    records.requests(4, {1000: 100})
    records.send("tyk.notice.ApiUpdated", [notice("ApiUpdated", 0)], minute=5, node="dash")
    # after (minutes 6-10): every minute 6 % of requests at 300 ms
    for minute in range(6, 11):
        records.requests(minute, {10: 94, 300: 6})
    impact = analyst.change_impact(write(sink, records), analyst.Scope())
    row = impact.set_index("change_at").loc[pd.Timestamp(T0).tz_localize(None) + pd.Timedelta(minutes=5)]
    # by the records: 100 of 500 requests before took 1000 ms (p95 1000); 30 of 500 after took 300 ms
    # (p95 300). A request-weighted mean of the per-minute p95s said 208 before, 300 after: +92 ms.
    assert row["before_latency_p95_ms"] == pytest.approx(1000, rel=0.01)
    assert row["after_latency_p95_ms"] == pytest.approx(300, rel=0.01)
    assert row["delta_latency_p95_ms"] < -600
    assert (row["before_requests"], row["after_requests"]) == (500, 500)


def test_keys_touched_counts_a_key_once_across_orgs(sink: ClickHouseSink) -> None:
    records = Records()
    records.events(0, "TokenCreated", ["k1", "k2"], org="org1")
    records.events(0, "TokenDeleted", ["k1"], org="")  # the admin call gave no org_id
    churn = analyst.token_churn(write(sink, records), analyst.Scope())
    # two keys were touched (k1 created and deleted, k2 created); adding the orgs' counts said 3
    assert churn["keys_touched"].tolist() == [2]
    by_org = analyst.token_churn(sink.client, analyst.Scope(), by_org=True)
    assert dict(zip(by_org["org_id"], by_org["keys_touched"], strict=True)) == {"": 1, "org1": 2}


def test_peak_keys_are_distinct_across_event_types(sink: ClickHouseSink) -> None:
    records = Records()
    records.events(0, "RatelimitExceeded", [f"k{i}" for i in range(1, 7)])  # k1..k6
    records.events(0, "QuotaExceeded", [f"k{i}" for i in range(4, 8)])  # k4..k7
    records.events(1, "RatelimitExceeded", ["k1"])
    client = write(sink, records)
    top = analyst.rate_limited_apis(client, analyst.Scope())
    # 7 distinct keys limited in minute 0 (the largest event type alone had 6)
    assert top[["api_id", "peak_keys_per_window", "windows_with_hits"]].values.tolist() == [["api1", 7, 2]]
    hits = analyst.rate_limit_hits(client, analyst.Scope(), by="api_id")
    # per minute, distinct over both event types (adding them said 10 in minute 0)
    assert hits["distinct_keys"].tolist() == [7, 1]


def test_rate_limited_apis_keeps_orgs_apart_and_compares_org_events_with_the_org(
    sink: ClickHouseSink,
) -> None:
    records = Records()
    records.requests(0, {10: 100}, org="org1", api="shared")
    records.requests(0, {10: 900}, org="org2", api="shared")
    records.events(0, "RatelimitExceeded", [f"k{i}" for i in range(50)], org="org1", api="shared")
    records.requests(0, {10: 200}, org="org3", api="b")
    records.events(0, "OrgRateLimitExceeded", ["org3"] * 20, org="org3", api="")
    top = analyst.rate_limited_apis(write(sink, records), analyst.Scope())
    rows = {(r.org_id, r.api_id): (r.hits, r.requests, r.limited_share) for r in top.itertuples()}
    # org1 refused 50 of its own 100 requests on "shared" (mixed with org2's 900 it read 5 %);
    # org3's 20 org-level refusals (no API) against its 200 requests (it read 0 against 0 requests)
    assert rows == {("org1", "shared"): (50, 100, 0.5), ("org3", ""): (20, 200, 0.1)}


def test_org_level_events_arriving_through_apis_are_one_row_per_org(sink: ClickHouseSink) -> None:
    # each org event reaches tykpulse through a webhook handler attached to an API, which names it
    records = Records()
    for api in ("a", "b", "c"):
        records.requests(0, {10: 100}, org="org5", api=api)
        records.events(0, "OrgRateLimitExceeded", ["org5"] * 30, org="org5", api=api)
        records.events(0, "OrgQuotaExceeded", ["org5"] * 2, org="org5", api=api)
    records.events(0, "RatelimitExceeded", ["k1", "k2"], org="org5", api="a")
    top = analyst.rate_limited_apis(write(sink, records), analyst.Scope())
    rows = {
        (r.org_id, r.api_id): (r.hits, r.rate_limited, r.quota_exceeded, r.requests) for r in top.itertuples()
    }
    # the org's 96 org-level events against its 300 requests (it read three rows of 32 against 100)
    assert rows == {("org5", ""): (96, 90, 6, 300), ("org5", "a"): (2, 2, 0, 100)}


def test_changes_per_hour_are_over_the_period_asked_about(sink: ClickHouseSink) -> None:
    records = Records()
    for _ in range(3):
        records.send("tyk.notice.ApiUpdated", [notice("ApiUpdated", 0)], minute=10, node="dash")
    records.send("tyk.notice.PolicyChanged", [notice("PolicyChanged", 0)], minute=70, node="dash")
    client = write(sink, records)
    two_hours = analyst.Scope(start=T0, end=T0 + dt.timedelta(hours=2))
    frequency = analyst.change_frequency(client, two_hours).set_index("command")
    # 3 changes in 2 hours: 1.5 an hour (divided by first-to-last change + 1 minute it read 180)
    assert frequency.loc["ApiUpdated", "per_hour"] == pytest.approx(1.5)
    assert frequency.loc["PolicyChanged", "per_hour"] == pytest.approx(0.5)
    # an open scope runs from the first to the end of the last minute with a change: 61 minutes
    whole = analyst.change_frequency(client, analyst.Scope()).set_index("command")
    assert whole.loc["ApiUpdated", "per_hour"] == pytest.approx(3 / (61 / 60))
