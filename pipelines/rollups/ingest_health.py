"""ingest_health and ingest_rejections: per node and receive-time window.

Unlike the other rollups these are by receive time: they describe the
firehose, not the traffic. A rejected message whose node is unknown (an
undecodable envelope) is attributed to node_id ''.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import WINDOW, Batch
from sinks.clickhouse.contract import INGEST_HEALTH, INGEST_REJECTIONS

KEYS = [WINDOW, "node_id"]


def rollup(batch: Batch) -> pa.Table:
    accepted = batch.messages.group_by(KEYS).agg(
        messages=pl.len(), records=pl.col("records").sum(), lost_messages=pl.col("lost").sum()
    )
    rejected = batch.rejections.group_by(KEYS).agg(rejected=pl.col("rejected").sum())
    frame = accepted.join(rejected, on=KEYS, how="full", coalesce=True).fill_null(0)
    return to_input_table(frame, INGEST_HEALTH)


def rejections(batch: Batch) -> pa.Table:
    frame = batch.rejections.group_by([*KEYS, "reason"]).agg(rejected=pl.col("rejected").sum())
    return to_input_table(frame, INGEST_REJECTIONS)
