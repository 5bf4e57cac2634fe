"""rate_limit_hits: rate-limit and quota events per (window, org, API, event type)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipelines.firehose.protocol import RATE_LIMIT_EVENTS
from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import WINDOW, Batch
from sinks.clickhouse.contract import RATE_LIMIT_HITS


def rollup(batch: Batch) -> pa.Table:
    frame = (
        batch.events.filter(pl.col("event").is_in(RATE_LIMIT_EVENTS))
        .group_by([WINDOW, "org_id", "api_id", "event"])
        .agg(hits=pl.len(), key_hashes=pl.col("key_hash").drop_nulls().unique())
        .rename({"event": "event_type"})
    )
    return to_input_table(frame, RATE_LIMIT_HITS)
