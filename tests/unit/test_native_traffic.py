"""The native traffic rollup against its reference (the polars group-by it replaced), row for row.

Random and hostile records (negative and huge codes and latencies, empty and non-ASCII
ids, every status class boundary) go through both; the partial rows must be equal,
histograms included. The latency buckets are checked against LogHistogram.bucket_indexes
on every boundary of every bucket.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines._native import FlushColumns, MessageColumns, traffic_rows
from pipelines.firehose.analytics_columns import FlushAnalytics
from pipelines.rollups import traffic
from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import WINDOW, AnalyticsRecords, Batch
from pipelines.windows.histogram import MAX_VALUE
from sinks.clickhouse.contract import TRAFFIC

pytestmark = pytest.mark.unit

HISTOGRAM = traffic.HISTOGRAM


def reference(batch: Batch) -> pa.Table:
    """The traffic rollup as a polars group-by over the records spelled out (the former path)."""
    records = batch.analytics.frame().filter(pl.col("response_code") >= 0)
    code = pl.col("response_code")
    buckets = pl.Series("bucket", HISTOGRAM.bucket_indexes(records["latency_ms"].to_numpy()))
    per_bucket = (
        records.with_columns(buckets)
        .group_by([*traffic.KEYS, "bucket"])
        .agg(
            n=pl.len().cast(pl.UInt64),
            s4xx=code.is_between(400, 499).sum(),
            s429=(code == 429).sum(),
            s5xx=code.is_between(500, 599).sum(),
        )
    )
    frame = per_bucket.group_by(traffic.KEYS).agg(
        requests=pl.col("n").sum(),
        status_4xx=pl.col("s4xx").sum(),
        status_429=pl.col("s429").sum(),
        status_5xx=pl.col("s5xx").sum(),
        latency_buckets=pl.col("bucket"),
        latency_counts=pl.col("n"),
    )
    return to_input_table(frame, TRAFFIC)


def normalised(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows in key order, each histogram as sorted (bucket, count) pairs."""
    rows = []
    for row in table.to_pylist():
        histogram = sorted(zip(row.pop("latency_buckets"), row.pop("latency_counts"), strict=True))
        rows.append((*row.values(), histogram))
    return sorted(rows, key=repr)


def batch_of(records: list[tuple[int, str, str, int, int]]) -> Batch:
    """A batch whose analytics are `records` of (window_start, org, api, response code, latency)."""
    flush = FlushColumns()
    if records:
        windows, orgs, apis, codes, latencies = map(list, zip(*records, strict=True))
        flush.append(MessageColumns.from_columns([0] * len(records), orgs, apis, codes, latencies))
    else:
        windows = []
    batch = Batch.empty()
    batch.analytics = AnalyticsRecords(np.array(windows, dtype=np.uint32), FlushAnalytics.of(flush))
    return batch


ids = st.sampled_from(["", "org", "api", "ÿ", "日本", "a\x00b", "x" * 300])
codes = st.one_of(
    st.sampled_from([-(2**63), -1, 0, 200, 399, 400, 428, 429, 430, 499, 500, 599, 600, 2**63 - 1]),
    st.integers(-(2**63), 2**63 - 1),
)
latencies = st.one_of(
    st.sampled_from([-(2**63), -1, 0, 1, 2, 3, MAX_VALUE - 1, MAX_VALUE, MAX_VALUE + 1, 2**63 - 1]),
    st.integers(0, 100_000),
    st.integers(-(2**63), 2**63 - 1),
)
records = st.lists(st.tuples(st.sampled_from([0, 60, 2**32 - 60]), ids, ids, codes, latencies), max_size=300)


@given(records)
def test_the_native_rows_equal_the_reference_rows(drawn: list[tuple[int, str, str, int, int]]) -> None:
    batch = batch_of(drawn)
    native = traffic.rollup(batch)
    assert native.schema == reference(batch).schema
    assert normalised(native) == normalised(reference(batch))
    requests = sum(1 for _, _, _, code, _ in drawn if code >= 0)
    assert sum(native.column("requests").to_pylist()) == requests


def test_every_bucket_boundary_agrees_with_the_histogram() -> None:
    thresholds = HISTOGRAM.thresholds()
    near = np.concatenate([thresholds + delta for delta in (-2, -1, 0, 1, 2)])
    values = np.unique(np.concatenate([near, np.arange(-5, 70_000), [MAX_VALUE, MAX_VALUE + 1, 2**62]]))
    expected = np.bincount(HISTOGRAM.bucket_indexes(values))
    n = len(values)
    zeros = np.zeros(n, dtype=np.uint32)
    _, _, _, (requests, *_), (offsets, buckets, counts) = traffic_rows(
        zeros, zeros, zeros, np.full(n, 200, dtype=np.int64), values.astype(np.int64), thresholds
    )
    assert np.frombuffer(requests, "<u8").tolist() == [n]
    bucket_list, count_list = np.frombuffer(buckets, "<u2").tolist(), np.frombuffer(counts, "<u8").tolist()
    got = dict(zip(bucket_list, count_list, strict=True))
    assert got == {bucket: int(count) for bucket, count in enumerate(expected) if count}
    assert np.frombuffer(offsets, "<i8").tolist() == [0, len(got)]


def test_a_value_s_bucket_is_the_number_of_thresholds_at_or_below_it() -> None:
    thresholds = HISTOGRAM.thresholds()
    values = np.concatenate([np.arange(0, 200_000), thresholds - 1, thresholds, [MAX_VALUE]])
    assert (np.searchsorted(thresholds, values, side="right") == HISTOGRAM.bucket_indexes(values)).all()


def test_an_empty_flush_gives_no_rows() -> None:
    table = traffic.rollup(batch_of([]))
    assert table.num_rows == 0
    assert table.schema == reference(batch_of([])).schema


def test_a_flush_s_rows_are_one_per_window_org_and_api() -> None:
    batch = batch_of(
        [(0, "o", "a", 200, 5), (0, "o", "a", 503, 5), (60, "o", "a", 429, 5), (0, "o", "b", -1, 5)]
    )
    rows = {(r[WINDOW], r["api_id"]): r["requests"] for r in traffic.rollup(batch).to_pylist()}
    assert rows == {(0, "a"): 2, (60, "a"): 1}


def test_inconsistent_or_mistyped_columns_are_refused() -> None:
    one, two = np.zeros(1, dtype=np.uint32), np.zeros(2, dtype=np.uint32)
    ints, thresholds = np.zeros(2, dtype=np.int64), HISTOGRAM.thresholds()
    with pytest.raises(ValueError, match="different lengths"):
        traffic_rows(two, one, two, ints, ints, thresholds)
    with pytest.raises(ValueError, match="out of order"):
        traffic_rows(two, two, two, ints, ints, thresholds[::-1].copy())
    with pytest.raises(BufferError):
        traffic_rows(ints, two, two, ints, ints, thresholds)  # type: ignore[arg-type]  # the wrong dtype on purpose
