"""DDL for the output contract, generated from sinks.clickhouse.contract.

Every statement is idempotent (IF NOT EXISTS / CREATE OR REPLACE VIEW), so the
schema can be applied on every start. The state tables keep the last
DEDUP_WINDOW insert tokens, which is what makes a retried flush land once
(insert_deduplication_token also works on non-replicated MergeTree when
non_replicated_deduplication_window is set).
"""

from __future__ import annotations

from typing import Final

from sinks.clickhouse.contract import DATABASE, GRAINS, ROLLUPS, WINDOW_COLUMN, WINDOW_TYPE, Rollup
from sinks.clickhouse.registry_ddl import registry_statements

DEDUP_WINDOW: Final = 10_000


def _columns(columns: list[tuple[str, str]]) -> str:
    return ",\n    ".join(f"{name} {type_}" for name, type_ in columns)


def _key_names(rollup: Rollup) -> list[str]:
    return [WINDOW_COLUMN, *(k.name for k in rollup.keys)]


def input_table(rollup: Rollup, db: str) -> str:
    cols = [(c.name, c.type) for c in rollup.input_columns]
    return f"CREATE TABLE IF NOT EXISTS {db}.{rollup.input_table} (\n    {_columns(cols)}\n) ENGINE = Null"


def state_table(rollup: Rollup, grain: str, db: str) -> str:
    cols = [(WINDOW_COLUMN, WINDOW_TYPE), *((k.name, k.type) for k in rollup.keys)]
    cols += [(m.name, m.state_type) for m in rollup.measures]
    order = ", ".join(_key_names(rollup))
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{rollup.name}_{grain}_state (\n    {_columns(cols)}\n)"
        f"\nENGINE = AggregatingMergeTree"
        f"\nPARTITION BY toYYYYMM({WINDOW_COLUMN})"
        f"\nORDER BY ({order})"
        f"\nSETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
    )


def materialized_view(rollup: Rollup, grain: str, db: str) -> str:
    bucket = f"{GRAINS[grain]}({WINDOW_COLUMN})"
    keys = ", ".join(k.name for k in rollup.keys)
    folds = ",\n    ".join(f"{m.fold} AS {m.name}" for m in rollup.measures)
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{rollup.name}_{grain}_mv"
        f" TO {db}.{rollup.name}_{grain}_state AS\n"
        f"SELECT\n    {bucket} AS {WINDOW_COLUMN}, {keys},\n    {folds}"
        f"\nFROM {db}.{rollup.input_table}\nGROUP BY {WINDOW_COLUMN}, {keys}"
    )


def finalized_view(rollup: Rollup, grain: str, db: str) -> str:
    keys = ", ".join(_key_names(rollup))
    merges = ",\n        ".join(f"{m.merge} AS {m.name}" for m in rollup.measures)
    outputs = ",\n    ".join(f"CAST({o.expr}, '{o.type}') AS {o.name}" for o in rollup.outputs)
    return (
        f"CREATE OR REPLACE VIEW {db}.{rollup.name}_{grain} AS\nSELECT\n    {keys},\n    {outputs}\n"
        f"FROM (\n    SELECT {keys},\n        {merges}\n    FROM {db}.{rollup.name}_{grain}_state\n"
        f"    GROUP BY {keys}\n)"
    )


def schema_statements(db: str = DATABASE) -> list[str]:
    """All statements, in dependency order."""
    statements = [f"CREATE DATABASE IF NOT EXISTS {db}"]
    for rollup in ROLLUPS:
        statements.append(input_table(rollup, db))
        for grain in GRAINS:
            statements.append(state_table(rollup, grain, db))
            statements.append(materialized_view(rollup, grain, db))
            statements.append(finalized_view(rollup, grain, db))
    statements += registry_statements(db, DEDUP_WINDOW)
    return statements


def view_names() -> list[str]:
    return [f"{r.name}_{grain}" for r in ROLLUPS for grain in GRAINS]
