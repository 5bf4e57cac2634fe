"""traffic: requests per (window, org, API), status classes, latency histogram.

Aggregated by the native core in one pass over the flush's columns, with the GIL
released; the ids stay codes until the rows (a few per key) are spelled out here.
The polars group-by this replaced is kept in the tests as the reference it must match.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from pipelines._native import traffic_rows
from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import WINDOW, Batch
from pipelines.windows.histogram import LogHistogram
from sinks.clickhouse.contract import LATENCY_RELATIVE_ERROR, TRAFFIC

HISTOGRAM = LogHistogram(LATENCY_RELATIVE_ERROR)
KEYS = [WINDOW, "org_id", "api_id"]


def rollup(batch: Batch) -> pa.Table:
    records = batch.analytics
    columns = records.columns
    # Records with a negative ResponseCode (Tyk's TCP network-stat records, not requests)
    # are left out natively.
    window, org, api, counts, (offsets, buckets, bucket_counts) = traffic_rows(
        records.window_start,
        columns.org_codes,
        columns.api_codes,
        columns.response_code,
        columns.latency_ms,
        HISTOGRAM.thresholds(),
    )
    requests, status_4xx, status_429, status_5xx = (np.frombuffer(c, "<u8") for c in counts)
    offsets_array = pa.array(np.frombuffer(offsets, "<i8"))

    def histogram(values: bytes, dtype: str) -> pl.Series:
        lists = pa.LargeListArray.from_arrays(offsets_array, pa.array(np.frombuffer(values, dtype)))
        return pl.Series(lists)

    frame = pl.DataFrame(
        {
            WINDOW: np.frombuffer(window, "<u4"),
            "org_id": pl.Series(columns.org_values, dtype=pl.Utf8).gather(np.frombuffer(org, "<u4")),
            "api_id": pl.Series(columns.api_values, dtype=pl.Utf8).gather(np.frombuffer(api, "<u4")),
            "requests": requests,
            "status_4xx": status_4xx,
            "status_429": status_429,
            "status_5xx": status_5xx,
            "latency_buckets": histogram(buckets, "<u2"),
            "latency_counts": histogram(bucket_counts, "<u8"),
        }
    )
    return to_input_table(frame, TRAFFIC)
