"""DDL for the registries of the output contract (sinks.clickhouse.contract.REGISTRIES).

Same shape as a rollup without windows: a Null input table, one
AggregatingMergeTree keyed by the registry's keys (min/max/sum states, so any
number of partial rows from any number of workers merge to one), a
materialized view folding inputs in, and a view finalizing one row per key.
Every statement is idempotent.
"""

from __future__ import annotations

from sinks.clickhouse.contract import REGISTRIES, Registry


def _columns(columns: list[tuple[str, str]]) -> str:
    return ",\n    ".join(f"{name} {type_}" for name, type_ in columns)


def _keys(registry: Registry) -> str:
    return ", ".join(k.name for k in registry.keys)


def input_table(registry: Registry, db: str) -> str:
    cols = [(c.name, c.type) for c in registry.input_columns]
    return f"CREATE TABLE IF NOT EXISTS {db}.{registry.input_table} (\n    {_columns(cols)}\n) ENGINE = Null"


def state_table(registry: Registry, db: str, dedup_window: int) -> str:
    cols = [(k.name, k.type) for k in registry.keys] + [(m.name, m.state_type) for m in registry.measures]
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{registry.name}_state (\n    {_columns(cols)}\n)"
        f"\nENGINE = AggregatingMergeTree\nORDER BY ({_keys(registry)})"
        f"\nSETTINGS non_replicated_deduplication_window = {dedup_window}"
    )


def materialized_view(registry: Registry, db: str) -> str:
    folds = ",\n    ".join(f"{m.fold} AS {m.name}" for m in registry.measures)
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{registry.name}_mv TO {db}.{registry.name}_state AS\n"
        f"SELECT\n    {_keys(registry)},\n    {folds}\nFROM {db}.{registry.input_table}"
        f"\nGROUP BY {_keys(registry)}"
    )


def finalized_view(registry: Registry, db: str) -> str:
    keys = _keys(registry)
    merges = ",\n        ".join(f"{m.merge} AS {m.name}" for m in registry.measures)
    outputs = ",\n    ".join(f"CAST({o.expr} AS {o.type}) AS {o.name}" for o in registry.outputs)
    return (
        f"CREATE OR REPLACE VIEW {db}.{registry.name} AS\nSELECT\n    {keys},\n    {outputs}\n"
        f"FROM (\n    SELECT {keys},\n        {merges}\n    FROM {db}.{registry.name}_state\n"
        f"    GROUP BY {keys}\n)"
    )


def registry_statements(db: str, dedup_window: int) -> list[str]:
    out = []
    for registry in REGISTRIES:
        out += [
            input_table(registry, db),
            state_table(registry, db, dedup_window),
            materialized_view(registry, db),
            finalized_view(registry, db),
        ]
    return out
