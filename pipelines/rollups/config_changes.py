"""config_changes: cluster notifications per (window, command, publishing node)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import WINDOW, Batch
from sinks.clickhouse.contract import CONFIG_CHANGES


def rollup(batch: Batch) -> pa.Table:
    frame = batch.notices.group_by([WINDOW, "command", "node_id"]).agg(changes=pl.len())
    return to_input_table(frame, CONFIG_CHANGES)
