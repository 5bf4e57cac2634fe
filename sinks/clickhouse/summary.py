"""Read-side summaries of the output contract: rows and totals per view."""

from __future__ import annotations

import dataclasses
from typing import Any

from sinks.clickhouse.contract import GRAINS, ROLLUPS


@dataclasses.dataclass(frozen=True, slots=True)
class ViewTotals:
    view: str
    rows: int
    totals: dict[str, int]


def _count_columns(rollup_outputs: tuple[Any, ...]) -> list[str]:
    return [o.name for o in rollup_outputs if o.type == "UInt64" and o.name != "distinct_keys"]


def view_totals(client: Any, database: str) -> list[ViewTotals]:
    """For every view: its row count and the sum of each of its count columns."""
    out = []
    for rollup in ROLLUPS:
        counts = _count_columns(rollup.outputs)
        for grain in GRAINS:
            view = f"{rollup.name}_{grain}"
            sums = ", ".join(f"sum({c})" for c in counts)
            row = client.query(f"SELECT count(), {sums} FROM {database}.{view}").result_rows[0]
            out.append(
                ViewTotals(view, int(row[0]), {c: int(v) for c, v in zip(counts, row[1:], strict=True)})
            )
    return out
