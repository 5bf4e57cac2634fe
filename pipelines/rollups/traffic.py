"""traffic: requests per (window, org, API), status classes, latency histogram."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import WINDOW, Batch
from pipelines.windows.histogram import LogHistogram
from sinks.clickhouse.contract import LATENCY_RELATIVE_ERROR, TRAFFIC

HISTOGRAM = LogHistogram(LATENCY_RELATIVE_ERROR)
KEYS = [WINDOW, "org_id", "api_id"]


def rollup(batch: Batch) -> pa.Table:
    # ResponseCode -1 marks Tyk's TCP network-stat records, which are not requests.
    records = batch.analytics.filter(pl.col("response_code") >= 0)
    code = pl.col("response_code")
    buckets = pl.Series("bucket", HISTOGRAM.bucket_indexes(records["latency_ms"].to_numpy()))
    per_bucket = (
        records.with_columns(buckets)
        .group_by([*KEYS, "bucket"])
        .agg(
            n=pl.len().cast(pl.UInt64),
            s4xx=code.is_between(400, 499).sum(),
            s429=(code == 429).sum(),
            s5xx=code.is_between(500, 599).sum(),
        )
    )
    frame = per_bucket.group_by(KEYS).agg(
        requests=pl.col("n").sum(),
        status_4xx=pl.col("s4xx").sum(),
        status_429=pl.col("s429").sum(),
        status_5xx=pl.col("s5xx").sum(),
        latency_buckets=pl.col("bucket"),
        latency_counts=pl.col("n"),
    )
    return to_input_table(frame, TRAFFIC)
