"""The output contract: what tykpulse writes to ClickHouse and what readers see.

Each rollup is declared once here. The DDL module turns a declaration into
ClickHouse objects:

    <name>_in          Null table: the partial rollups a worker inserts
    <name>_1m_state    AggregatingMergeTree fed by a materialized view from _in
    <name>_1h_state    AggregatingMergeTree fed by a materialized view from _in
    <name>_1m, _1h     views returning one finalized row per key

Partial rows merge inside ClickHouse (sum, sumMap, uniqCombined64 states), so a
window flushed in several parts, a late record, or two workers writing the
same window all give the same totals as one pass. Column names and meanings
are documented in docs/output-contract.md; dashboards, notebooks and alert
rules read exactly the views.
"""

from __future__ import annotations

import dataclasses
from typing import Final

DATABASE: Final = "tykpulse"

# Latency histogram: relative error of every reported quantile (see
# pipelines/windows/histogram.py for the bound). Changing it changes the
# meaning of stored bucket indexes, so it is part of the storage format.
LATENCY_RELATIVE_ERROR: Final = 0.01
LATENCY_GAMMA: Final = (1 + LATENCY_RELATIVE_ERROR) / (1 - LATENCY_RELATIVE_ERROR)
# uniqCombined64 with its default precision: ~0.3-0.8 % relative error past
# ~65 k distinct values, exact below (ClickHouse documentation); bounded state.
DISTINCT_FUNCTION: Final = "uniqCombined64"

WINDOW_COLUMN: Final = "window_start"
WINDOW_TYPE: Final = "DateTime('UTC')"


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    # True for an input added after databases already existed: the DDL then also emits
    # idempotent ALTERs (ADD COLUMN IF NOT EXISTS, MODIFY QUERY) that upgrade them in place.
    added: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Measure:
    """A stored aggregate: its state type, how partial inputs fold into it, how states merge."""

    name: str
    state_type: str
    fold: str
    merge: str


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    """A column of the finalized view, an expression over the merged measures."""

    name: str
    type: str
    expr: str


@dataclasses.dataclass(frozen=True, slots=True)
class Aggregate:
    """What rollups and registries share: partial rows in, merged states, finalized outputs."""

    name: str
    keys: tuple[Column, ...]
    inputs: tuple[Column, ...]
    measures: tuple[Measure, ...]
    outputs: tuple[Output, ...]
    description: str

    @property
    def input_table(self) -> str:
        return f"{self.name}_in"

    @property
    def input_columns(self) -> tuple[Column, ...]:
        return (*self.keys, *self.inputs)


@dataclasses.dataclass(frozen=True, slots=True)
class Rollup(Aggregate):
    """Keyed by a time window and the keys: one row per window and key, at every grain."""

    @property
    def input_columns(self) -> tuple[Column, ...]:
        return (Column(WINDOW_COLUMN, WINDOW_TYPE), *self.keys, *self.inputs)


def _sum(name: str) -> Measure:
    return Measure(name, "SimpleAggregateFunction(sum, UInt64)", f"sum({name})", f"sum({name})")


def _passthrough(name: str, type_: str = "UInt64") -> Output:
    return Output(name, type_, name)


def _distinct_keys() -> Measure:
    return Measure(
        "distinct_keys",
        f"AggregateFunction({DISTINCT_FUNCTION}, UInt64)",
        f"{DISTINCT_FUNCTION}ArrayState(key_hashes)",
        f"{DISTINCT_FUNCTION}Merge(distinct_keys)",
    )


def hist_quantile_sql(hist: str, q: float, gamma: float = LATENCY_GAMMA) -> str:
    """Nearest-rank quantile of a merged Map(UInt16, UInt64) log histogram (NaN when empty)."""
    representatives = (
        f"arrayMap(i -> if(i = 0, 0., 2 * pow({gamma!r}, i - 1) / ({gamma!r} + 1)), mapKeys({hist}))"
    )
    rank = f"greatest(1, ceil({q} * arraySum(mapValues({hist}))))"
    position = f"arrayFirstIndex(c -> c >= {rank}, arrayCumSum(mapValues({hist})))"
    return f"if(empty({hist}), nan, {representatives}[{position}])"


def merged_quantile_sql(hist: str, q: float) -> str:
    """Aggregate SQL: the quantile of the histograms `hist` merged over a GROUP BY (e.g. across APIs)."""
    return hist_quantile_sql(f"sumMap({hist})", q)


TRAFFIC = Rollup(
    name="traffic",
    keys=(Column("org_id", "String"), Column("api_id", "String")),
    inputs=(
        Column("requests", "UInt64"),
        Column("status_4xx", "UInt64"),
        Column("status_429", "UInt64"),
        Column("status_5xx", "UInt64"),
        Column("latency_buckets", "Array(UInt16)"),
        Column("latency_counts", "Array(UInt64)"),
    ),
    measures=(
        _sum("requests"),
        _sum("status_4xx"),
        _sum("status_429"),
        _sum("status_5xx"),
        Measure(
            "latency_hist",
            "SimpleAggregateFunction(sumMap, Map(UInt16, UInt64))",
            "sumMap(mapFromArrays(latency_buckets, latency_counts))",
            "sumMap(latency_hist)",
        ),
    ),
    outputs=(
        _passthrough("requests"),
        _passthrough("status_4xx"),
        _passthrough("status_429"),
        _passthrough("status_5xx"),
        Output("latency_p50_ms", "Float64", hist_quantile_sql("latency_hist", 0.5)),
        Output("latency_p95_ms", "Float64", hist_quantile_sql("latency_hist", 0.95)),
        Output("latency_p99_ms", "Float64", hist_quantile_sql("latency_hist", 0.99)),
        # the merged histogram itself: quantiles across APIs, orgs or windows do not average,
        # readers merge this (merged_quantile_sql) for a true one
        Output("latency_hist", "Map(UInt16, UInt64)", "latency_hist"),
    ),
    description="Requests per org and API from analytics records, with status classes and latency quantiles.",
)

RATE_LIMIT_HITS = Rollup(
    name="rate_limit_hits",
    keys=(
        Column("org_id", "String"),
        Column("api_id", "String"),
        Column("event_type", "LowCardinality(String)"),
    ),
    inputs=(Column("hits", "UInt64"), Column("key_hashes", "Array(UInt64)")),
    measures=(_sum("hits"), _distinct_keys()),
    outputs=(_passthrough("hits"), _passthrough("distinct_keys")),
    description="Rate-limit and quota events per org, API and event type, with distinct keys.",
)

TOKEN_CHURN = Rollup(
    name="token_churn",
    keys=(Column("org_id", "String"),),
    inputs=(
        Column("created", "UInt64"),
        Column("updated", "UInt64"),
        Column("deleted", "UInt64"),
        Column("key_hashes", "Array(UInt64)"),
    ),
    measures=(_sum("created"), _sum("updated"), _sum("deleted"), _distinct_keys()),
    outputs=(
        _passthrough("created"),
        _passthrough("updated"),
        _passthrough("deleted"),
        _passthrough("distinct_keys"),
    ),
    description="TokenCreated/Updated/Deleted events per org, with distinct keys touched.",
)

# What each Tyk cluster notification means (fact sheet §4.3). One definition, read by the
# config_changes views (`kind`, `is_config`) and through them by dashboards, alerts and notebooks.
# `config`: the gateway's configuration changed (APIs, policies, tyk.conf): a reload follows.
# A gateway without a Dashboard publishes GroupReload for /tyk/reload/group; POST /tyk/apis
# publishes nothing, so such a change is seen only through the reload that follows it.
CONFIG_COMMANDS: Final = (
    "ApiUpdated",
    "ApiAdded",
    "ApiRemoved",
    "PolicyChanged",
    "GroupReload",
    "NoticeConfigUpdated",
)
# Housekeeping: frequent, not configuration. KeySpaceUpdateNotification fires on every
# session write (each authenticated request that passes the limiter), the DRL notice every
# 2 s per gateway; they stay countable under their own kind.
NOTICE_KINDS: Final = {
    **dict.fromkeys(CONFIG_COMMANDS, "config"),
    "KeySpaceUpdateNotification": "key_space",
    "NoticeGatewayDRLNotification": "rate_limiter",
}
OTHER_NOTICE_KIND: Final = "other"


def notice_kind_sql(column: str = "command") -> str:
    """`kind` of a command in SQL, from NOTICE_KINDS (unknown commands are 'other')."""
    commands = ", ".join(f"'{c}'" for c in NOTICE_KINDS)
    kinds = ", ".join(f"'{k}'" for k in NOTICE_KINDS.values())
    return f"transform({column}, [{commands}], [{kinds}], '{OTHER_NOTICE_KIND}')"


CONFIG_CHANGES = Rollup(
    name="config_changes",
    keys=(Column("command", "LowCardinality(String)"), Column("node_id", "String")),
    inputs=(Column("changes", "UInt64"),),
    measures=(_sum("changes"),),
    # kind and is_config are computed in the views, not stored: reclassifying a command is a
    # CREATE OR REPLACE VIEW, and existing state tables need no migration.
    outputs=(
        _passthrough("changes"),
        Output("kind", "LowCardinality(String)", notice_kind_sql()),
        Output("is_config", "UInt8", f"{notice_kind_sql()} = 'config'"),
    ),
    description="Cluster notifications per command and issuing node (the gateway when Tyk's payload "
    "names it, else the publishing node), classified: is_config = 1 for configuration changes.",
)


def _delivery_quantile_ms(q: float) -> str:
    # delivery is histogrammed in microseconds (sub-millisecond hops are common on one host)
    return f"({hist_quantile_sql('delivery_hist', q)}) / 1000"


INGEST_HEALTH = Rollup(
    name="ingest_health",
    keys=(Column("node_id", "String"),),
    inputs=(
        Column("messages", "UInt64"),
        Column("records", "UInt64"),
        Column("lost_messages", "UInt64"),
        Column("rejected", "UInt64"),
        Column("delivery_buckets", "Array(UInt16)"),
        Column("delivery_counts", "Array(UInt64)"),
        Column("delivery_negative", "UInt64"),
        Column("rejected_messages", "UInt64", added=True),
        Column("goodbyes", "UInt64", added=True),
    ),
    measures=(
        _sum("messages"),
        _sum("records"),
        _sum("lost_messages"),
        _sum("rejected"),
        Measure(
            "delivery_hist",
            "SimpleAggregateFunction(sumMap, Map(UInt16, UInt64))",
            "sumMap(mapFromArrays(delivery_buckets, delivery_counts))",
            "sumMap(delivery_hist)",
        ),
        _sum("delivery_negative"),
        _sum("rejected_messages"),
        _sum("goodbyes"),
    ),
    outputs=(
        _passthrough("messages"),
        _passthrough("records"),
        _passthrough("lost_messages"),
        _passthrough("rejected"),
        Output("delivery_p50_ms", "Float64", _delivery_quantile_ms(0.5)),
        Output("delivery_p99_ms", "Float64", _delivery_quantile_ms(0.99)),
        _passthrough("delivery_negative"),
        _passthrough("rejected_messages"),
        _passthrough("goodbyes"),
    ),
    description="Per publishing node and receive-time window: accepted messages and records, losses, "
    "rejections (records, and messages refused as a whole), delivery latency (envelope sent -> receipt).",
)

INGEST_REJECTIONS = Rollup(
    name="ingest_rejections",
    keys=(Column("node_id", "String"), Column("reason", "LowCardinality(String)")),
    inputs=(Column("rejected", "UInt64"),),
    measures=(_sum("rejected"),),
    outputs=(_passthrough("rejected"),),
    description="Rejections by publishing node and reason, by receive-time window (node '' when unknown).",
)

ROLLUPS: Final = (TRAFFIC, RATE_LIMIT_HITS, TOKEN_CHURN, CONFIG_CHANGES, INGEST_HEALTH, INGEST_REJECTIONS)
ROLLUPS_BY_NAME: Final = {r.name: r for r in ROLLUPS}
GRAINS: Final = {"1m": "toStartOfMinute", "1h": "toStartOfHour"}


# ---------------------------------------------------------------------------- registries
# A registry is keyed by an entity instead of a window: one row per key, the
# latest state merged from every flush of every worker (min/max/sum states).


@dataclasses.dataclass(frozen=True, slots=True)
class Registry(Aggregate):
    """Keyed by an entity, not a window: one row per key for all time."""


def _simple(function: str, name: str, type_: str) -> Measure:
    return Measure(
        name, f"SimpleAggregateFunction({function}, {type_})", f"{function}({name})", f"{function}({name})"
    )


# A publisher that promised interval_ms and was silent for STALE_FACTOR times
# that is stale (PROTOCOL.md); one that never sent a heartbeat is held to the default.
STALE_FACTOR: Final = 3
DEFAULT_INTERVAL_MS: Final = 1000
_SEEN_TYPE: Final = "DateTime64(3, 'UTC')"
_INTERVAL_SQL: Final = f"if(interval_ms = 0, {DEFAULT_INTERVAL_MS}, interval_ms)"

PUBLISHERS = Registry(
    name="publishers",
    keys=(Column("node_id", "String"), Column("boot", "UInt64")),
    inputs=(
        Column("first_seen", _SEEN_TYPE),
        Column("last_seen", _SEEN_TYPE),
        Column("interval_ms", "UInt32"),
        Column("messages", "UInt64"),
        Column("lost_messages", "UInt64"),
        # receipt of the incarnation's goodbye (epoch 0: none yet)
        Column("last_goodbye", _SEEN_TYPE, added=True),
    ),
    measures=(
        _simple("min", "first_seen", _SEEN_TYPE),
        _simple("max", "last_seen", _SEEN_TYPE),
        _simple("max", "interval_ms", "UInt32"),
        _sum("messages"),
        _sum("lost_messages"),
        _simple("max", "last_goodbye", _SEEN_TYPE),
    ),
    outputs=(
        Output("boot_time", _SEEN_TYPE, "fromUnixTimestamp64Milli(toInt64(boot), 'UTC')"),
        _passthrough("first_seen", _SEEN_TYPE),
        _passthrough("last_seen", _SEEN_TYPE),
        Output("interval_ms", "UInt32", _INTERVAL_SQL),
        Output(
            "state",
            "String",
            # a goodbye that is the last thing heard is a planned stop, not an outage
            f"if(toUnixTimestamp64Milli(last_goodbye) > 0 AND last_goodbye >= last_seen, 'stopped', "
            f"if(dateDiff('millisecond', last_seen, now64(3)) > {STALE_FACTOR} * {_INTERVAL_SQL}, "
            "'stale', 'live'))",
        ),
        _passthrough("messages"),
        _passthrough("lost_messages"),
    ),
    description="Every publisher incarnation (node, boot) seen: first/last receipt, promised heartbeat "
    "interval, live, stale or stopped (said goodbye) now, messages accepted and lost.",
)

REGISTRIES: Final = (PUBLISHERS,)
TABLES_BY_NAME: Final[dict[str, Aggregate]] = {t.name: t for t in (*ROLLUPS, *REGISTRIES)}
# Where each partial table a worker computes is inserted.
INPUT_TABLES: Final = {name: t.input_table for name, t in TABLES_BY_NAME.items()}
