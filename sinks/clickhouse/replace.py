"""Removing the stored windows of a time range, so that a rebuild replaces instead of adding.

The state tables are AggregatingMergeTree: inserting recomputed partial rows
would add to what is there. `delete_windows` removes every state row of the
given rollups whose window starts in [from_s, to_s) (a mutation, waited for);
the caller then inserts the recomputed rows. Readers may see the range empty
between the two steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from clickhouse_connect.driver.exceptions import ClickHouseError

from sinks.clickhouse.contract import GRAINS, WINDOW_COLUMN
from sinks.clickhouse.sink import ClickHouseSink, translate


def delete_windows(sink: ClickHouseSink, rollups: Sequence[str], from_s: int, to_s: int) -> int:
    """Delete the state rows of windows in [from_s, to_s) of every grain; returns the rows deleted."""
    deleted = 0
    where = f"{WINDOW_COLUMN} >= toDateTime({int(from_s)}) AND {WINDOW_COLUMN} < toDateTime({int(to_s)})"
    for name in rollups:
        for grain in GRAINS:
            table = f"{sink.database}.{name}_{grain}_state"
            try:
                deleted += int(
                    sink.client.query(f"SELECT count() FROM {table} WHERE {where}").result_rows[0][0]
                )
                sink.client.command(f"ALTER TABLE {table} DELETE WHERE {where} SETTINGS mutations_sync = 2")
            except (ClickHouseError, OSError) as exc:
                raise translate(exc, f"delete windows from {table}", table) from exc
    return deleted
