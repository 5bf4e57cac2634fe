"""publishers: one partial row per publisher incarnation (node, boot) heard in a batch.

First and last receipt, the heartbeat interval it promised (0 when this batch
has no heartbeat from it), the messages accepted and lost, and when it said
goodbye (epoch 0 if it did not): the view calls it stopped when that goodbye
is the last thing heard from it. The registry
merges them with min/max/sum, so every flush of every worker folds into one
row per incarnation, and the view decides live or stale from last_seen.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import Batch
from sinks.clickhouse.contract import PUBLISHERS

KEYS = ["node_id", "boot"]
_MS = pl.Datetime("ms", "UTC")


def rollup(batch: Batch) -> pa.Table:
    seen = batch.messages.group_by(KEYS).agg(
        first_seen=(pl.col("received_ns").min() // 1_000_000).cast(pl.Int64).cast(_MS),
        last_seen=(pl.col("received_ns").max() // 1_000_000).cast(pl.Int64).cast(_MS),
        messages=(pl.col("rejected") == 0).sum(),  # accepted ones; a refused one still counts as heard
        lost_messages=pl.col("lost").sum(),
    )
    # per incarnation: a heartbeat under another boot of the name must not set this one's
    intervals = batch.heartbeats.group_by(KEYS).agg(interval_ms=pl.col("interval_ms").max())
    goodbyes = (
        batch.heartbeats.filter(pl.col("bye"))
        .group_by(KEYS)
        .agg(last_goodbye=(pl.col("received_ns").max() // 1_000_000).cast(pl.Int64).cast(_MS))
    )
    frame = (
        seen.join(intervals, on=KEYS, how="left")
        .join(goodbyes, on=KEYS, how="left")
        .with_columns(
            pl.col("interval_ms").fill_null(0),
            # epoch 0 means "no goodbye": max() keeps a real one from any other flush
            pl.col("last_goodbye").fill_null(pl.lit(0).cast(_MS)),
        )
    )
    return to_input_table(frame, PUBLISHERS)
