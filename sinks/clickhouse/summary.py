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


PUBLISHER_COLUMNS = ("node", "boot", "state", "last_seen_age_s", "interval_ms", "messages", "lost")


def publisher_rows(client: Any, database: str) -> list[dict[str, Any]]:
    """The publishers view, with the seconds since each incarnation was last heard."""
    result = client.query(
        "SELECT node_id, boot, state, dateDiff('millisecond', last_seen, now64(3)) / 1000, interval_ms, "
        f"messages, lost_messages FROM {database}.publishers ORDER BY node_id, boot"
    )
    return [dict(zip(PUBLISHER_COLUMNS, row, strict=True)) for row in result.result_rows]
