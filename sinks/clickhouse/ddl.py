"""DDL for the output contract, generated from sinks.clickhouse.contract.

Every statement is idempotent (IF NOT EXISTS / CREATE OR REPLACE VIEW), so the
schema can be applied on every start. A column added to a rollup later is
declared `added` in the contract; it is then also brought into databases created
by an older version (ADD COLUMN IF NOT EXISTS, MODIFY QUERY on the view). The state tables keep the last
DEDUP_WINDOW insert tokens, which is what makes a retried flush land once
(insert_deduplication_token also works on non-replicated MergeTree when
non_replicated_deduplication_window is set).

With a ClusterLayout the same objects are generated for a sharded, replicated
cluster (`tykpulse schema apply --cluster NAME`): every statement runs ON
CLUSTER; state tables become Replicated*MergeTree with a deduplication window
kept in Keeper (so a retried or redone flush lands once whichever replica
takes it); each input and state table gets a Distributed twin (`<table>_all`):
writers insert into `<name>_in_all`, which routes each partial row to a shard
by a hash of its keys (the same rows always go to the same shard, so a redone
flush meets its first attempt's tokens there), and the views read the
`_state_all` tables, merging the shards' states. See docs/scaling.md.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from sinks.clickhouse.contract import (
    DATABASE,
    GRAINS,
    REGISTRIES,
    ROLLUPS,
    WINDOW_COLUMN,
    WINDOW_TYPE,
    Aggregate,
    Rollup,
)

DEDUP_WINDOW: Final = 10_000
POSITIONS_TABLE: Final = "kafka_positions"
POSITIONS_RUN_COLUMNS: Final = (
    ("seq_run_lows", "Array(Array(Int64))"),
    ("seq_run_highs", "Array(Array(Int64))"),
)
# Keep tokens a week on replicas: a flush redone after a long outage must still meet its first attempt.
DEDUP_WINDOW_SECONDS: Final = 7 * 24 * 3600
DISTRIBUTED_SUFFIX: Final = "_all"


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterLayout:
    """A ClickHouse cluster from the server's remote_servers, and how to lay the schema out on it.

    `replicated=False` gives plain *MergeTree tables on every shard (a sharded
    cluster without replicas). `on_cluster=False` leaves ON CLUSTER out, for
    applying the statements node by node when distributed DDL is not set up.
    Replicated paths use the server macros {shard} and {replica}.
    """

    name: str
    replicated: bool = True
    on_cluster: bool = True
    keeper_prefix: str = "/clickhouse/tables"

    @property
    def clause(self) -> str:
        return f" ON CLUSTER {self.name}" if self.on_cluster else ""

    def engine(self, family: str, table: str, db: str, *, sharded: bool = True, args: str = "") -> str:
        if not self.replicated:
            return f"{family}({args})" if args else family
        shard = "{shard}" if sharded else "all"
        path = f"'{self.keeper_prefix}/{shard}/{db}/{table}', '{{replica}}'"
        return f"Replicated{family}({path}{', ' + args if args else ''})"


def _on(layout: ClusterLayout | None) -> str:
    return layout.clause if layout is not None else ""


Table = Aggregate  # a rollup (windowed) or a registry (one row per key, for all time)


def insert_table(table: Table, layout: ClusterLayout | None = None) -> str:
    """The table writers insert a rollup's (or registry's) partial rows into."""
    return table.input_table + (DISTRIBUTED_SUFFIX if layout is not None else "")


def _sharding_key(table: Table) -> str:
    return f"cityHash64({', '.join(_key_names(table))})"


def distributed_table(table: str, sharding_key: str, db: str, layout: ClusterLayout) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{table}{DISTRIBUTED_SUFFIX}{layout.clause} AS {db}.{table}"
        f"\nENGINE = Distributed({layout.name}, {db}, {table}, {sharding_key})"
    )


def _columns(columns: list[tuple[str, str]]) -> str:
    return ",\n    ".join(f"{name} {type_}" for name, type_ in columns)


def _key_names(table: Table) -> list[str]:
    windowed = [WINDOW_COLUMN] if isinstance(table, Rollup) else []
    return [*windowed, *(k.name for k in table.keys)]


def _named(table: Table, grain: str | None, suffix: str = "") -> str:
    """`<name>_<grain><suffix>` for a rollup at a grain, `<name><suffix>` for a registry."""
    return f"{table.name}_{grain}{suffix}" if grain is not None else f"{table.name}{suffix}"


def input_table(table: Table, db: str, layout: ClusterLayout | None = None) -> str:
    cols = [(c.name, c.type) for c in table.input_columns]
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{table.input_table}{_on(layout)} (\n    {_columns(cols)}\n)"
        " ENGINE = Null"
    )


def state_table(table: Table, grain: str | None, db: str, layout: ClusterLayout | None = None) -> str:
    windowed = isinstance(table, Rollup)
    cols = [(WINDOW_COLUMN, WINDOW_TYPE)] if windowed else []
    cols += [(k.name, k.type) for k in table.keys]
    cols += [(m.name, m.state_type) for m in table.measures]
    name = _named(table, grain, "_state")
    if layout is None:
        engine, dedup = "AggregatingMergeTree", f"non_replicated_deduplication_window = {DEDUP_WINDOW}"
    else:
        engine = layout.engine("AggregatingMergeTree", name, db)
        dedup = (
            f"replicated_deduplication_window = {DEDUP_WINDOW}, "
            f"replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECONDS}"
            if layout.replicated
            else f"non_replicated_deduplication_window = {DEDUP_WINDOW}"
        )
    partition = f"\nPARTITION BY toYYYYMM({WINDOW_COLUMN})" if windowed else ""
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{name}{_on(layout)} (\n    {_columns(cols)}\n)"
        f"\nENGINE = {engine}{partition}"
        f"\nORDER BY ({', '.join(_key_names(table))})"
        f"\nSETTINGS {dedup}"
    )


def _mv_select(table: Table, grain: str | None, db: str) -> str:
    keys = ", ".join(k.name for k in table.keys)
    group = ", ".join(_key_names(table))
    selected = f"{GRAINS[grain]}({WINDOW_COLUMN}) AS {WINDOW_COLUMN}, {keys}" if grain is not None else keys
    folds = ",\n    ".join(f"{m.fold} AS {m.name}" for m in table.measures)
    return f"SELECT\n    {selected},\n    {folds}\nFROM {db}.{table.input_table}\nGROUP BY {group}"


def materialized_view(table: Table, grain: str | None, db: str, layout: ClusterLayout | None = None) -> str:
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{_named(table, grain, '_mv')}{_on(layout)}"
        f" TO {db}.{_named(table, grain, '_state')} AS\n{_mv_select(table, grain, db)}"
    )


def _add_columns(name: str, columns: list[tuple[str, str]], layout: ClusterLayout | None) -> str:
    adds = ",\n    ".join(f"ADD COLUMN IF NOT EXISTS {n} {t}" for n, t in columns)
    return f"ALTER TABLE {name}{_on(layout)}\n    {adds}"


def _has_added(table: Table) -> bool:
    return any(c.added for c in table.inputs)


def upgrade_state(table: Table, grain: str | None, db: str, layout: ClusterLayout | None = None) -> list[str]:
    """Columns an older version's state table (and its Distributed twin) lacks.

    CREATE TABLE IF NOT EXISTS leaves an existing table as it was, so an input
    declared `added` needs its measure added here. It must run before the
    materialized view's CREATE, which checks its query against the state table
    even when the view exists. Idempotent; nothing without added inputs.
    """
    if not _has_added(table):
        return []
    state = f"{db}.{_named(table, grain, '_state')}"
    columns = [(m.name, m.state_type) for m in table.measures]
    statements = [_add_columns(state, columns, layout)]
    if layout is not None:
        statements.append(_add_columns(state + DISTRIBUTED_SUFFIX, columns, layout))
    return statements


def upgrade_view(table: Table, grain: str | None, db: str, layout: ClusterLayout | None = None) -> list[str]:
    """The query of an older version's materialized view, replaced so added inputs fold in."""
    if not _has_added(table):
        return []
    view = f"{db}.{_named(table, grain, '_mv')}"
    return [f"ALTER TABLE {view}{_on(layout)} MODIFY QUERY\n{_mv_select(table, grain, db)}"]


def _upgrade_input(table: Table, db: str, layout: ClusterLayout | None) -> list[str]:
    added = [(c.name, c.type) for c in table.inputs if c.added]
    if not added:
        return []
    statements = [_add_columns(f"{db}.{table.input_table}", added, layout)]
    if layout is not None:
        statements.append(_add_columns(f"{db}.{table.input_table}{DISTRIBUTED_SUFFIX}", added, layout))
    return statements


def finalized_view(table: Table, grain: str | None, db: str, layout: ClusterLayout | None = None) -> str:
    keys = ", ".join(_key_names(table))
    source = _named(table, grain, "_state") + (DISTRIBUTED_SUFFIX if layout is not None else "")
    merges = ",\n        ".join(f"{m.merge} AS {m.name}" for m in table.measures)
    outputs = ",\n    ".join(f"CAST({o.expr} AS {o.type}) AS {o.name}" for o in table.outputs)
    return (
        f"CREATE OR REPLACE VIEW {db}.{_named(table, grain)}{_on(layout)} AS\n"
        f"SELECT\n    {keys},\n    {outputs}\n"
        f"FROM (\n    SELECT {keys},\n        {merges}\n    FROM {db}.{source}\n"
        f"    GROUP BY {keys}\n)"
    )


def positions_table(db: str, layout: ClusterLayout | None = None) -> str:
    """Kafka source positions (sinks.clickhouse.positions); on a cluster one replicated table, not sharded."""
    engine = "ReplacingMergeTree(version)"
    if layout is not None:
        engine = layout.engine("ReplacingMergeTree", POSITIONS_TABLE, db, sharded=False, args="version")
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{POSITIONS_TABLE}{_on(layout)} (\n"
        "    topic String,\n    partition UInt32,\n    claim UInt64,\n"
        "    first_offset Int64,\n    last_offset Int64,\n"
        "    seq_nodes Array(String),\n    seq_boots Array(Int64),\n    seq_last Array(Int64),\n"
        + "".join(f"    {name} {type_},\n" for name, type_ in POSITIONS_RUN_COLUMNS)
        + "    owner String,\n    written_at DateTime64(3, 'UTC'),\n"
        "    version UInt128 MATERIALIZED bitShiftLeft(toUInt128(claim), 64) + toUInt128(last_offset + 1)\n"
        f") ENGINE = {engine}\nORDER BY (topic, partition)"
    )


def _table_statements(
    table: Table, grains: list[str | None], db: str, layout: ClusterLayout | None
) -> list[str]:
    statements = [input_table(table, db, layout)]
    if layout is not None:
        statements.append(distributed_table(table.input_table, _sharding_key(table), db, layout))
    statements += _upgrade_input(table, db, layout)
    for grain in grains:
        statements.append(state_table(table, grain, db, layout))
        if layout is not None:
            statements.append(
                distributed_table(_named(table, grain, "_state"), _sharding_key(table), db, layout)
            )
        statements += upgrade_state(table, grain, db, layout)
        statements.append(materialized_view(table, grain, db, layout))
        statements += upgrade_view(table, grain, db, layout)
        statements.append(finalized_view(table, grain, db, layout))
    return statements


def schema_statements(db: str = DATABASE, layout: ClusterLayout | None = None) -> list[str]:
    """All statements, in dependency order (for a cluster when `layout` is given)."""
    statements = [f"CREATE DATABASE IF NOT EXISTS {db}{_on(layout)}"]
    for rollup in ROLLUPS:
        statements += _table_statements(rollup, list(GRAINS), db, layout)
    for registry in REGISTRIES:
        statements += _table_statements(registry, [None], db, layout)
    statements.append(positions_table(db, layout))
    # a positions table made before the runs were kept gets them (empty: the last seq alone)
    statements.append(_add_columns(f"{db}.{POSITIONS_TABLE}", list(POSITIONS_RUN_COLUMNS), layout))
    return statements


def materialized_view_names(db: str = DATABASE) -> list[str]:
    """The qualified names of the contract's materialized views (one per state table)."""
    return list(_views(db))


def _views(db: str) -> dict[str, Table]:
    views: dict[str, Table] = {f"{db}.{_named(r, grain, '_mv')}": r for r in ROLLUPS for grain in GRAINS}
    views.update({f"{db}.{_named(r, None, '_mv')}": r for r in REGISTRIES})
    return views


_MODIFY_QUERY: Final = re.compile(r"ALTER TABLE (\S+)(?: ON CLUSTER \S+)?\s+MODIFY QUERY\b")


_CREATE_VIEW: Final = re.compile(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\S+?)(?: ON CLUSTER \S+)? TO ")


def created_view(statement: str) -> str | None:
    """The view `statement` creates (a materialized_view statement), else None."""
    match = _CREATE_VIEW.match(statement)
    return match.group(1) if match else None


def modified_view(statement: str) -> str | None:
    """The view whose query `statement` replaces (an upgrade_view statement), else None."""
    match = _MODIFY_QUERY.match(statement)
    return match.group(1) if match else None


def view_is_current(view: str, as_select: str, db: str = DATABASE) -> bool:
    """Whether a view's query (system.tables.as_select) already folds every measure of its table."""
    table = _views(db).get(view)
    if table is None:
        return False
    query = as_select.replace("`", "")
    return all(f" AS {m.name}" in query for m in table.measures)


def reattach_statements(views: list[str]) -> list[str]:
    """DETACH and ATTACH each of `views` (qualified names), in that order, view by view.

    The engine names a materialized view in the deduplication ids of its blocks
    by its UUID when it was loaded or attached, but by its name in the process
    that created it or replaced its query (ALTER ... MODIFY QUERY): a flush sent
    to that process and retried after a restart (a crash, an upgrade) would land
    twice in the view (measured with chDB 4.4, ClickHouse 26.9). Attached again
    at once, the view is named as every later process names it.
    """
    return [f"{verb} TABLE {view}" for view in views for verb in ("DETACH", "ATTACH")]


def view_names() -> list[str]:
    return [f"{r.name}_{grain}" for r in ROLLUPS for grain in GRAINS]
