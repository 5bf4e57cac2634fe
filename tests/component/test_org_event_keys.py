"""Org-level limit events add no key to the keys an API had limited.

Tyk's OrgRateLimitExceeded and OrgQuotaExceeded carry the org id as their `Key`
(fact sheet §3.3), and reach tykpulse through a webhook handler attached to an
API. Merged with that API's distinct keys, each org id read as one more limited
key: a keyless API refused only by its org showed a key limited. The events go
through the real path into embedded ClickHouse; the shipped panels and the
analyst API are read back.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines import analyst
from sinks.clickhouse.sink import ClickHouseSink
from tests.analysts.grafana import TimeRange, expand
from tests.component.test_analyst_exactness import T0, Records, write

pytestmark = pytest.mark.component

DASHBOARDS = Path(__file__).parents[2] / "dashboards"


@pytest.fixture
def client(tykpulse_sink: ClickHouseSink) -> Any:
    records = Records()
    records.events(0, "RatelimitExceeded", ["k1", "k2", "k3"], org="org6", api="keyed")
    records.events(0, "OrgQuotaExceeded", ["org6"] * 5, org="org6", api="keyed")
    records.events(1, "OrgRateLimitExceeded", ["org6"] * 4, org="org6", api="keyless")
    return write(tykpulse_sink, records)


def panel(client: Any, title: str) -> list[dict[str, Any]]:
    board = json.loads((DASHBOARDS / "rate_limits.json").read_text())
    sql = next(p for p in board["panels"] if p["title"] == title)["targets"][0]["rawSql"]
    time = TimeRange(T0 - dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=5), interval_s=60)
    result = client.query(expand(sql, {}, time, {"org", "api"}))
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_apis_hitting_limits_count_only_keys(client: Any) -> None:
    peaks = {row["api_id"]: row["peak_keys_per_minute"] for row in panel(client, "APIs hitting limits")}
    # three keys were limited on "keyed"; none on "keyless" (the org id is not a key)
    assert peaks == {"keyed": 3, "keyless": 0}


def test_peak_keys_panel_counts_only_keys(client: Any) -> None:
    keys = [row["keys"] for row in panel(client, "Distinct keys limited per minute (peak API)")]
    assert keys == [3, 0]


def test_analyst_keys_leave_out_org_events(client: Any) -> None:
    hits = analyst.rate_limit_hits(client, analyst.Scope(), by="api_id")
    assert hits[["api_id", "distinct_keys"]].values.tolist() == [["keyed", 3], ["keyless", 0]]
    top = analyst.rate_limited_apis(client, analyst.Scope())
    peaks = {(r.org_id, r.api_id): r.peak_keys_per_window for r in top.itertuples()}
    assert peaks == {("org6", "keyed"): 3, ("org6", ""): 0}
