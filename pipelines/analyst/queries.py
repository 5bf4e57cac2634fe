"""The common questions about the rollups, one function each, answered as pandas DataFrames.

Every function takes a clickhouse-connect client (pipelines.analyst.connect)
and a Scope (time range, orgs, APIs, grain). Filters a view does not have are
ignored (token churn has no API; configuration changes have neither org nor
API). Keys are hashed before they reach ClickHouse: only distinct-count states
per window exist. "keys" columns merge those states over the row's group
(uniqCombined64Merge over the state tables), so they are distinct counts per
window and group; sums of them across windows are upper bounds, not totals.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

import pandas as pd

from pipelines.analyst.scope import Scope
from sinks.clickhouse.contract import DISTINCT_FUNCTION, merged_quantile_sql

RATE_LIMIT_EVENTS: Final = ("RatelimitExceeded", "OrgRateLimitExceeded")
QUOTA_EVENTS: Final = ("QuotaExceeded", "OrgQuotaExceeded")
# limits of a whole org: Tyk names no API in them (the handler that carried one does)
ORG_LIMIT_EVENTS: Final = ("OrgRateLimitExceeded", "OrgQuotaExceeded")
# The keys limited, merged over a group's rows. Tyk gives an org-level event the org id as its key
# (fact sheet 3.3): merged with an API's keys, each org hit one key more than were limited.
_API_KEYS: Final = (
    f"{DISTINCT_FUNCTION}MergeIf(v.distinct_keys, v.event_type NOT IN {{org_events:Array(String)}})"
)


def _pandas_dtype(clickhouse_type: str) -> str:
    """The dtype query_df gives a ClickHouse type, for empty frames (times, numbers, else object)."""
    base = clickhouse_type.removeprefix("Nullable(").removeprefix("LowCardinality(")
    if base.startswith("DateTime"):
        return "datetime64[ns]"
    if base.startswith(("UInt", "Int")):
        return "int64"
    if base.startswith("Float"):
        return "float64"
    return "object"


def _frame(client: Any, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    frame: pd.DataFrame = client.query_df(sql, parameters=params)
    if frame.empty and len(frame.columns) == 0:
        # an empty result comes back without columns (the embedded client); a quiet period
        # must still give a frame callers can index, so ask the engine for the names alone
        described = client.query(f"DESCRIBE ({sql})", parameters=params).result_rows
        return pd.DataFrame({row[0]: pd.Series(dtype=_pandas_dtype(row[1])) for row in described})
    return frame


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).fillna(0.0).astype(float)


def traffic(client: Any, scope: Scope, *, by: str | None = None) -> pd.DataFrame:
    """Requests and 4xx/429/5xx per window (and per `by`: 'api_id' or 'org_id'), with rates.

    `latency_p95_ms` is the p95 of all the requests in the row (the APIs' latency
    histograms merged, not their p95s averaged); `latency_p95_ms_max` the worst API's p95.
    """
    if by not in (None, "api_id", "org_id"):
        msg = f"by must be 'api_id' or 'org_id', got {by!r}"
        raise ValueError(msg)
    group = ["window_start", *([by] if by else [])]
    where, params = scope.where()
    sql = f"""
        SELECT {", ".join(group)},
               sum(requests) AS requests, sum(status_4xx) AS status_4xx,
               sum(status_429) AS status_429, sum(status_5xx) AS status_5xx,
               {merged_quantile_sql("v.latency_hist", 0.95)} AS latency_p95_ms,
               max(v.latency_p95_ms) AS latency_p95_ms_max
        FROM {scope.view("traffic")} AS v{where}
        GROUP BY {", ".join(group)} ORDER BY {", ".join(group)}"""
    frame = _frame(client, sql, params)
    for column in ("4xx", "429", "5xx"):
        frame[f"rate_{column}"] = _ratio(frame[f"status_{column}"], frame["requests"])
    return frame


def rate_limit_hits(client: Any, scope: Scope, *, by: str = "api_id") -> pd.DataFrame:
    """Rate-limit and quota events per window and `by` ('api_id', 'org_id' or 'event_type').

    `distinct_keys`: the distinct keys refused in the window and `by` group (its
    rows' key states merged: a key refused under two event types or orgs counts once).
    Organisation-level events add none: the key Tyk gives them is the org id.
    """
    if by not in ("api_id", "org_id", "event_type"):
        msg = f"by must be 'api_id', 'org_id' or 'event_type', got {by!r}"
        raise ValueError(msg)
    where, params = scope.where()
    params.update(
        rate_events=list(RATE_LIMIT_EVENTS),
        quota_events=list(QUOTA_EVENTS),
        org_events=list(ORG_LIMIT_EVENTS),
    )
    sql = f"""
        SELECT window_start, {by},
               sum(hits) AS hits,
               sumIf(v.hits, v.event_type IN {{rate_events:Array(String)}}) AS rate_limited,
               sumIf(v.hits, v.event_type IN {{quota_events:Array(String)}}) AS quota_exceeded,
               {_API_KEYS} AS distinct_keys
        FROM {scope.state("rate_limit_hits")} AS v{where}
        GROUP BY window_start, {by} ORDER BY window_start, {by}"""
    return _frame(client, sql, params)


def rate_limited_apis(client: Any, scope: Scope, *, limit: int = 10) -> pd.DataFrame:
    """The (org, API) pairs hitting limits most, with the share of their requests limited and peak keys.

    One row per org_id and api_id (an api_id under two orgs is two rows). `requests` are
    that pair's requests. Org-level events (OrgRateLimitExceeded, OrgQuotaExceeded) are
    one row per org under api_id '', whatever API they arrived through (each reaches
    tykpulse through a webhook handler attached to an API, which names it); their
    `requests` are the org's over all its APIs. `limited_share` is the share of requests
    that hit a limit: with throttling, some of them were still served after retries
    (`status_429` counts those refused). `peak_keys_per_window`: the most distinct keys
    limited in one window (across event types; 0 on the org-level rows: their events name no key).
    """
    where, params = scope.where()
    params.update(
        rate_events=list(RATE_LIMIT_EVENTS),
        quota_events=list(QUOTA_EVENTS),
        org_events=list(ORG_LIMIT_EVENTS),
        limit=limit,
    )
    sql = f"""
        SELECT org_id, w.series_api AS api_id, sum(w.hits) AS hits, sum(w.rate_limited) AS rate_limited,
               sum(w.quota_exceeded) AS quota_exceeded, max(w.keys) AS peak_keys_per_window,
               count() AS windows_with_hits,
               min(window_start) AS first_hit, max(window_start) AS last_hit
        FROM (
            SELECT window_start, org_id,
                   if(v.event_type IN {{org_events:Array(String)}}, '', v.api_id) AS series_api,
                   sum(hits) AS hits,
                   sumIf(v.hits, v.event_type IN {{rate_events:Array(String)}}) AS rate_limited,
                   sumIf(v.hits, v.event_type IN {{quota_events:Array(String)}}) AS quota_exceeded,
                   {_API_KEYS} AS keys
            FROM {scope.state("rate_limit_hits")} AS v{where}
            GROUP BY window_start, org_id, series_api
        ) AS w
        GROUP BY org_id, series_api ORDER BY hits DESC, org_id, api_id LIMIT {{limit:UInt32}}"""
    limited = _frame(client, sql, params)
    if limited.empty:  # the same columns as a busy period, no rows
        return limited.assign(requests=0, status_429=0, limited_share=0.0)
    requests = _requests_by_org_api(client, scope, limited["org_id"].unique())
    org_level = requests.groupby("org_id", as_index=False)[["requests", "status_429"]].sum().assign(api_id="")
    per_api = pd.concat([requests[requests["api_id"] != ""], org_level], ignore_index=True)
    out = limited.merge(per_api, on=["org_id", "api_id"], how="left").fillna({"requests": 0, "status_429": 0})
    out["limited_share"] = _ratio(out["hits"], out["requests"])
    return out


def _requests_by_org_api(client: Any, scope: Scope, org_ids: Any) -> pd.DataFrame:
    """Requests and 429s per org_id and api_id of `org_ids`, within the scope's time range."""
    where, params = dataclasses.replace(scope, org_id=list(org_ids), api_id=None).where()
    sql = f"""
        SELECT org_id, api_id, sum(requests) AS requests, sum(status_429) AS status_429
        FROM {scope.view("traffic")}{where}
        GROUP BY org_id, api_id"""
    return _frame(client, sql, params)


def traffic_around(
    client: Any, scope: Scope, moments: Sequence[pd.Timestamp], *, before: pd.Timedelta, after: pd.Timedelta
) -> pd.DataFrame:
    """Per moment (a window start) and side: requests, 4xx, 5xx and p95 latency around it.

    'before' covers the windows in [moment - before, moment), 'after' those in
    [moment + 1 window, moment + 1 window + after): the moment's own window is on
    neither side. `latency_p95_ms` is the p95 of every request of the side (the
    histograms merged over its windows and the scope's APIs; NaN without requests).
    A side with no traffic has no row. Within the scope's filters, time range included.
    """
    where, params = scope.where()
    width = 60 if scope.grain == "1m" else 3600
    params.update(
        moments=[int(pd.Timestamp(m).timestamp()) for m in moments],
        before_s=int(before.total_seconds()),
        after_s=int(after.total_seconds()) + width,
        width_s=width,
    )
    sql = f"""
        SELECT m.at AS at, if(v.window_start < m.at, 'before', 'after') AS side,
               sum(v.requests) AS requests, sum(v.status_4xx) AS status_4xx,
               sum(v.status_5xx) AS status_5xx,
               {merged_quantile_sql("v.latency_hist", 0.95)} AS latency_p95_ms
        FROM (SELECT toDateTime(arrayJoin({{moments:Array(Int64)}}), 'UTC') AS at) AS m
        CROSS JOIN (
            SELECT window_start, requests, status_4xx, status_5xx, latency_hist
            FROM {scope.view("traffic")}{where}
        ) AS v
        WHERE (v.window_start >= m.at - {{before_s:Int64}} AND v.window_start < m.at)
           OR (v.window_start >= m.at + {{width_s:Int64}} AND v.window_start < m.at + {{after_s:Int64}})
        GROUP BY at, side ORDER BY at, side"""
    return _frame(client, sql, params)


def status_rates(client: Any, scope: Scope) -> pd.DataFrame:
    """Per window: requests, 429 responses and quota (403) events, and their rates.

    The traffic rollup counts 429 responses; a quota rejection is a 403 that
    Tyk reports with a QuotaExceeded event, so the 403 rate is taken from those
    events.
    """
    frame = traffic(client, scope)[["window_start", "requests", "status_429", "rate_429"]]
    hits = rate_limit_hits(client, scope, by="event_type")
    quota = hits.groupby("window_start", as_index=False)["quota_exceeded"].sum()
    out = frame.merge(quota, on="window_start", how="left").fillna({"quota_exceeded": 0})
    out["quota_exceeded"] = out["quota_exceeded"].astype("uint64")
    out["rate_403_quota"] = _ratio(out["quota_exceeded"], out["requests"])
    return out


def token_churn(client: Any, scope: Scope, *, by_org: bool = False) -> pd.DataFrame:
    """Tokens created, updated, deleted per window (and org), with net change and churn.

    As Tyk counts them (docs/output-contract.md): a re-POSTed key counts as created again, and a
    deletion whose admin call gave no org_id is filed under org '' (net per org is then off).
    `keys_touched`: distinct keys per row (the orgs' key states merged: a key created under
    its org and deleted under '' counts once).
    """
    group = ["window_start", *(["org_id"] if by_org else [])]
    where, params = scope.where(api=False)
    sql = f"""
        SELECT {", ".join(group)},
               sum(created) AS created, sum(updated) AS updated, sum(deleted) AS deleted,
               {DISTINCT_FUNCTION}Merge(distinct_keys) AS keys_touched
        FROM {scope.state("token_churn")}{where}
        GROUP BY {", ".join(group)} ORDER BY {", ".join(group)}"""
    frame = _frame(client, sql, params)
    frame["net"] = frame["created"].astype("int64") - frame["deleted"].astype("int64")
    frame["churn"] = frame["created"] + frame["deleted"]
    return frame


def _notices_where(scope: Scope, housekeeping: bool) -> tuple[str, dict[str, Any]]:
    """The scope's filter on config_changes, restricted to is_config = 1 unless `housekeeping`.

    is_config is the output contract's one definition of a configuration change;
    key-space updates and DRL heartbeats (kind 'key_space', 'rate_limiter') are
    notices, not changes, and outnumber real changes by far.
    """
    where, params = scope.where(org=False, api=False)
    if housekeeping:
        return where, params
    return (f"{where} AND is_config = 1" if where else " WHERE is_config = 1"), params


def config_changes(client: Any, scope: Scope, *, housekeeping: bool = False) -> pd.DataFrame:
    """Configuration changes per window, command and issuing node (every notice with `housekeeping`)."""
    where, params = _notices_where(scope, housekeeping)
    sql = f"""
        SELECT window_start, command, node_id, any(kind) AS kind, sum(changes) AS changes
        FROM {scope.view("config_changes")}{where}
        GROUP BY window_start, command, node_id ORDER BY window_start, command, node_id"""
    return _frame(client, sql, params)


def change_frequency(client: Any, scope: Scope, *, housekeeping: bool = False) -> pd.DataFrame:
    """Per command and node: changes, windows with changes, first and last, changes per hour.

    `per_hour` is changes divided by the period asked about (the scope's start to end); an
    open end of the scope is taken at the first (last) window with a notice in the answer.
    """
    where, params = _notices_where(scope, housekeeping)
    sql = f"""
        SELECT command, node_id, any(kind) AS kind, sum(changes) AS changes,
               uniqExact(window_start) AS windows,
               min(window_start) AS first_change, max(window_start) AS last_change
        FROM {scope.view("config_changes")}{where}
        GROUP BY command, node_id ORDER BY changes DESC, command, node_id"""
    frame = _frame(client, sql, params)
    frame["per_hour"] = frame["changes"] / (_period(scope, frame) / pd.Timedelta(hours=1))
    return frame


def _period(scope: Scope, frame: pd.DataFrame) -> pd.Timedelta:
    """The length of the scope, its open ends closed by the frame's first and last windows."""
    width = pd.Timedelta(minutes=1 if scope.grain == "1m" else 60)
    if frame.empty:
        return width
    start = _utc(scope.start) if scope.start is not None else frame["first_change"].min()
    end = _utc(scope.end) if scope.end is not None else frame["last_change"].max() + width
    return max(end - start, width)


def _utc(value: dt.datetime) -> pd.Timestamp:
    """A scope bound as the naive UTC timestamps query_df gives window starts as."""
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def ingest_health(client: Any, scope: Scope) -> pd.DataFrame:
    """Per receive-time window and node: messages, records, lost messages, rejections."""
    where, params = scope.where(org=False, api=False)
    sql = f"""
        SELECT window_start, node_id, sum(messages) AS messages, sum(records) AS records,
               sum(lost_messages) AS lost_messages, sum(rejected) AS rejected
        FROM {scope.view("ingest_health")}{where}
        GROUP BY window_start, node_id ORDER BY window_start, node_id"""
    return _frame(client, sql, params)


def rejections(client: Any, scope: Scope) -> pd.DataFrame:
    """Rejected messages and records by reason and node."""
    where, params = scope.where(org=False, api=False)
    sql = f"""
        SELECT reason, node_id, sum(rejected) AS rejected
        FROM {scope.view("ingest_rejections")}{where}
        GROUP BY reason, node_id ORDER BY rejected DESC, reason, node_id"""
    return _frame(client, sql, params)


def data_range(client: Any, scope: Scope | None = None) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """First and last traffic window in the database (None when empty)."""
    scope = scope or Scope()
    row = client.query(
        f"SELECT min(window_start), max(window_start), count() FROM {scope.database}.traffic_1m"
    ).result_rows[0]
    if not row[2]:
        return None
    return pd.Timestamp(row[0]), pd.Timestamp(row[1])
