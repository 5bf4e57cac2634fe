"""The dashboards' org and api filters on values a publisher chose to break them.

Any firehose publisher chooses `org_id` and `api_id`. Grafana's `singlequote`
format escapes `'` but not `\\`, and the variables used to carry those values
into every panel's SQL: an org id ending in `\\` closed the next string, and the
one after it ran as SQL (`... OR 1=1 UNION ALL SELECT name FROM system.tables`).
With All selected, rows under `org_id = ''` (token deletions without an org) and
`api_id = ''` (org-level limits) were filtered out, since the variables list
only what traffic holds.

Here such records go through the real path (messages -> Ingestor -> rollups ->
ClickHouseSink) into embedded ClickHouse, and every panel of the three filtered
dashboards runs as Grafana would send it (tests/analysts/grafana.py), at All and
with each org selected alone. Ground truth is what was sent.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.ingest import Ingestor
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.analysts.grafana import TimeRange, apply_conditional_all, expand, interpolate_variables
from tests.helpers import analytics, event, message

pytestmark = pytest.mark.component

DASHBOARDS = Path(__file__).parents[2] / "dashboards"
BACKSLASH = "(\\"
INJECTION = ") OR 1=1 UNION ALL SELECT name FROM system.tables --"
# (org, api, requests): the hostile orgs' traffic and a plain one
TRAFFIC = (
    (BACKSLASH, "api-a", 3),
    (INJECTION, "api-b", 5),
    ("acme", "api\\", 7),
    # one api id in two orgs: two APIs, not one
    ("acme", "shared", 2),
    (BACKSLASH, "shared", 1),
)
ORGS = sorted({org for org, _, _ in TRAFFIC})
# acme/shared refuses r1-r3 (rate limit) and r3-r4 (quota) in one minute: 4 distinct keys
REFUSED = (("RatelimitExceeded", ("r1", "r2", "r3")), ("QuotaExceeded", ("r3", "r4")))
DELETED_WITHOUT_ORG = 4
ORG_QUOTA_EXCEEDED = 6


def hexed(value: str) -> str:
    return value.encode().hex().upper()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClickHouseSink, TimeRange]]:
    start = (time.time_ns() // (3600 * 10**9) - 1) * 3600 * 10**9
    ingestor = Ingestor(clock=lambda: start + 3600 * 10**9, hasher=KeyHasher(b"salt"))
    at = start + 105 * 10**9  # 45 s into a minute
    seq = 0

    def send(topic: str, records: list[dict[str, Any]]) -> None:
        nonlocal seq
        ingestor.ingest(message(topic, records, seq=seq, sent=at), received_ns=at)
        seq += 1

    for org, api, requests in TRAFFIC:
        send("tyk.analytics", [analytics(at, org=org, api=api, code=429) for _ in range(requests)])
    send("tyk.event.TokenCreated", [event("TokenCreated", at, org="acme", key=f"k{i}") for i in range(2)])
    send("tyk.event.TokenDeleted", [event("TokenDeleted", at, org="", key=f"k{i}") for i in range(4)])
    for name, keys in REFUSED:
        send(f"tyk.event.{name}", [event(name, at, org="acme", api="shared", key=k) for k in keys])
    send(
        "tyk.event.OrgQuotaExceeded",
        # Tyk gives an org-level event the org id as its key (fact sheet §3.3)
        [event("OrgQuotaExceeded", at, org="acme", api="", key="acme") for _ in range(ORG_QUOTA_EXCEEDED)],
    )
    sink = ClickHouseSink(
        ClickHouseSettings(
            clickhouse_dsn=f"chdb://{tmp_path_factory.mktemp('hostile') / 'db'}",
            clickhouse_database="tykpulse",
        )
    )
    sink.setup()
    sink.write(compute(ingestor.take()), "hostile")
    span = TimeRange(
        dt.datetime.fromtimestamp(start / 1e9, dt.UTC),
        dt.datetime.fromtimestamp(start / 1e9 + 3599, dt.UTC),
        interval_s=60,
    )
    yield sink, span
    sink.close()


def board(name: str) -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / f"{name}.json").read_text()))


def run_board(
    sink: ClickHouseSink, span: TimeRange, name: str, fixed: dict[str, list[str]]
) -> dict[str, list[tuple[Any, ...]]]:
    """Every panel's rows by title, the variables resolved as Grafana does (unfixed ones at All)."""
    values: dict[str, list[str]] = {}
    at_all: set[str] = set()
    dashboard = board(name)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        sql = interpolate_variables(apply_conditional_all(variable["query"], at_all), values)
        options = [str(row[0]) for row in sink.client.query(sql).result_rows]
        values[variable["name"]] = fixed.get(variable["name"], options)
        if variable["name"] not in fixed:
            at_all.add(variable["name"])
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            sql = expand(target["rawSql"], values, span, at_all)
            rows[panel["title"]] = sink.client.query(sql).result_rows
    return rows


def test_variable_options_are_hex_whatever_the_value(written: tuple[ClickHouseSink, TimeRange]) -> None:
    sink, _ = written
    sql = board("overview")["templating"]["list"][1]["query"]
    options = sink.client.query(sql).result_rows
    assert sorted(options) == sorted((hexed(org), org) for org in ORGS)
    assert all(set(value) <= set("0123456789ABCDEF") for value, _ in options)


@pytest.mark.parametrize("name", ["overview", "rate_limits", "tokens"])
def test_no_value_a_publisher_sends_changes_what_a_panel_runs(
    written: tuple[ClickHouseSink, TimeRange], name: str
) -> None:
    sink, span = written
    selections: list[dict[str, list[str]]] = [{}] + [{"org": [hexed(org)]} for org in ORGS]
    for fixed in selections:
        for title, rows in run_board(sink, span, name, fixed).items():
            text = repr(rows)
            # the engine's own tables never show up in a panel (the injection's UNION)
            assert "query_log" not in text, (name, fixed, title, text)
            assert "'tables'" not in text, (name, fixed, title, text)


def test_at_all_every_row_counts_and_each_org_alone_counts_its_own(
    written: tuple[ClickHouseSink, TimeRange],
) -> None:
    sink, span = written
    overview = run_board(sink, span, "overview", {})
    assert overview["Requests"] == [(sum(n for *_, n in TRAFFIC),)]
    for org in ORGS:
        requests = sum(n for o, _, n in TRAFFIC if o == org)
        assert run_board(sink, span, "overview", {"org": [hexed(org)]})["Requests"] == [(requests,)]
    busiest = {(row[0], row[1]): row[2] for row in overview["Busiest APIs"]}
    assert busiest == {(api, org): n for org, api, n in TRAFFIC}
    tokens = run_board(sink, span, "tokens", {})
    # deletions filed under org '' count at All (the org variable lists token_churn's orgs)
    assert tokens["Deleted"] == [(DELETED_WITHOUT_ORG,)]
    assert tokens["Created"] == [(2,)]
    limits = run_board(sink, span, "rate_limits", {})
    by_type = collections.Counter({row[1]: row[2] for row in limits["Events by type"]})
    assert by_type["OrgQuotaExceeded"] == ORG_QUOTA_EXCEEDED


def test_peak_keys_are_distinct_per_api_across_event_types(written: tuple[ClickHouseSink, TimeRange]) -> None:
    sink, span = written
    distinct = len({k for _, keys in REFUSED for k in keys})
    shared = run_board(sink, span, "rate_limits", {"api": [hexed("shared")]})
    # before: the largest event type's own count (3), not the API's
    assert [row[1] for row in shared["Distinct keys limited per minute (peak API)"]] == [distinct]
    limits = run_board(sink, span, "rate_limits", {})
    # the org-level events (api '') name no key: before, their org id was one key limited
    assert [row[1] for row in limits["Distinct keys limited per minute (peak API)"]] == [distinct]
    assert {row[0]: row[4] for row in limits["APIs hitting limits"]}[""] == 0
    apis = {(row[0], row[1]): row for row in limits["APIs hitting limits"]}
    _, _, rate_limited, quota, peak, *_ = apis[("shared", "acme")]
    assert (rate_limited, quota, peak) == (3, 2, distinct)


def test_seconds_since_the_last_message_count_from_the_message_not_its_minute(
    written: tuple[ClickHouseSink, TimeRange],
) -> None:
    sink, span = written
    received_s = (span.from_s * 10**9 + 105 * 10**9) / 1e9
    health = run_board(sink, span, "ingest_health", {})
    ((seconds,),) = health["Seconds since the last message"]
    # before: from the start of the message's minute, 45 s more than the truth
    assert abs(seconds - (time.time() - received_s)) < 5
    ((node, *_, seconds_since),) = health["Publishers"]
    assert node == "gw1"
    assert abs(seconds_since - (time.time() - received_s)) < 5
