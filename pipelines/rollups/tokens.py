"""token_churn: TokenCreated/Updated/Deleted per (window, org)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipelines.firehose.protocol import TOKEN_EVENTS
from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import WINDOW, Batch
from sinks.clickhouse.contract import TOKEN_CHURN


def rollup(batch: Batch) -> pa.Table:
    event = pl.col("event")
    frame = (
        batch.events.filter(event.is_in(TOKEN_EVENTS))
        .group_by([WINDOW, "org_id"])
        .agg(
            created=(event == "TokenCreated").sum(),
            updated=(event == "TokenUpdated").sum(),
            deleted=(event == "TokenDeleted").sum(),
            key_hashes=pl.col("key_hash").drop_nulls().unique(),
        )
    )
    return to_input_table(frame, TOKEN_CHURN)
