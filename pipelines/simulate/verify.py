"""Compare the views in ClickHouse with a simulator's ground truth.

Counts must be equal; distinct counts within DISTINCT_TOLERANCE (uniqCombined64
is exact for small sets and ~0.5 % off for large ones); quantiles within the
histogram's relative error (sinks.clickhouse.contract.LATENCY_RELATIVE_ERROR).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Final

from sinks.clickhouse.contract import LATENCY_RELATIVE_ERROR, ROLLUPS_BY_NAME

DISTINCT_TOLERANCE: Final = 0.02
_FLOAT_SLACK: Final = 1e-9


@dataclasses.dataclass(slots=True)
class ViewCheck:
    view: str
    expected_rows: int
    actual_rows: int
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.expected_rows == self.actual_rows


def _value_problem(column: str, expected: Any, actual: Any) -> str | None:
    if column.startswith("latency_p"):
        bound = LATENCY_RELATIVE_ERROR * abs(expected) + _FLOAT_SLACK
        if math.isnan(actual) or abs(actual - expected) > bound:
            return f"{column}: {actual} not within {LATENCY_RELATIVE_ERROR:.0%} of {expected}"
        return None
    if column == "distinct_keys":
        if abs(actual - expected) > DISTINCT_TOLERANCE * expected:
            return f"{column}: {actual} not within {DISTINCT_TOLERANCE:.0%} of {expected}"
        return None
    if actual != expected:
        return f"{column}: {actual} != {expected}"
    return None


def fetch_view(client: Any, database: str, view: str) -> list[dict[str, Any]]:
    rollup = ROLLUPS_BY_NAME[view.rsplit("_", 1)[0]]
    keys = [k.name for k in rollup.keys]
    outputs = [o.name for o in rollup.outputs]
    columns = ", ".join(keys + outputs)
    sql = f"SELECT toUnixTimestamp(window_start) AS window_start, {columns} FROM {database}.{view}"
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def check_view(client: Any, database: str, view: str, expected: list[dict[str, Any]]) -> ViewCheck:
    rollup = ROLLUPS_BY_NAME[view.rsplit("_", 1)[0]]
    key_names = ["window_start", *(k.name for k in rollup.keys)]
    actual = {tuple(r[k] for k in key_names): r for r in fetch_view(client, database, view)}
    check = ViewCheck(view, len(expected), len(actual))
    for row in expected:
        key = tuple(row[k] for k in key_names)
        got = actual.get(key)
        if got is None:
            check.problems.append(f"missing row {key}")
            continue
        for column, value in row.items():
            if column not in key_names and (problem := _value_problem(column, value, got[column])):
                check.problems.append(f"{key} {problem}")
    extra = set(actual) - {tuple(r[k] for k in key_names) for r in expected}
    check.problems.extend(f"unexpected row {key}" for key in sorted(extra)[:5])
    return check


def check_publishers(client: Any, database: str, publishers: dict[str, dict[str, int]]) -> ViewCheck:
    """Per node: messages and records accepted equal what was sent; nothing lost or rejected."""
    result = client.query(
        f"SELECT node_id, sum(messages), sum(records), sum(lost_messages), sum(rejected) "
        f"FROM {database}.ingest_health_1m GROUP BY node_id"
    )
    actual = {row[0]: row[1:] for row in result.result_rows}
    check = ViewCheck("ingest_health_1m", len(publishers), len(actual))
    for node, sent in sorted(publishers.items()):
        got = actual.get(node)
        if got is None:
            check.problems.append(f"no rows for node {node}")
            continue
        messages, records, lost, rejected = got
        if (messages, records, lost, rejected) != (sent["messages"], sent["records"], 0, 0):
            check.problems.append(
                f"{node}: messages={messages}/{sent['messages']} records={records}/{sent['records']} "
                f"lost={lost} rejected={rejected}"
            )
    return check


def check_all(client: Any, database: str, truth: dict[str, Any]) -> list[ViewCheck]:
    checks = [check_view(client, database, view, rows) for view, rows in sorted(truth["views"].items())]
    checks.append(check_publishers(client, database, truth["publishers"]))
    return checks
