"""ingest_health and ingest_rejections: per node and receive-time window.

Unlike the other rollups these are by receive time: they describe the
firehose, not the traffic. A rejected message whose node is unknown (an
undecodable envelope) is attributed to node_id ''.

Delivery latency is receipt minus the envelope's `sent`, in microseconds, in
the same mergeable log histogram as request latency. The two clocks are on
different hosts: a negative difference (the sender's clock ahead) is clamped
to 0 and counted in delivery_negative; a `sent` of 0 or less means "not
stamped" and is left out.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipelines.rollups.arrow import to_input_table
from pipelines.windows.batch import WINDOW, Batch
from pipelines.windows.histogram import LogHistogram
from sinks.clickhouse.contract import INGEST_HEALTH, INGEST_REJECTIONS, LATENCY_RELATIVE_ERROR

HISTOGRAM = LogHistogram(LATENCY_RELATIVE_ERROR)
KEYS = [WINDOW, "node_id"]


def _delivery(batch: Batch) -> pl.DataFrame:
    """Per key: the delivery histogram as bucket and count lists, and the negatives counted."""
    stamped = batch.messages.filter(pl.col("sent_ns") > 0).select(
        *KEYS, delivery_us=(pl.col("received_ns") - pl.col("sent_ns")) // 1000
    )
    buckets = pl.Series("bucket", HISTOGRAM.bucket_indexes(stamped["delivery_us"].to_numpy()))
    per_bucket = (
        stamped.with_columns(buckets)
        .group_by([*KEYS, "bucket"])
        .agg(n=pl.len().cast(pl.UInt64), negative=(pl.col("delivery_us") < 0).sum())
    )
    return per_bucket.group_by(KEYS).agg(
        delivery_buckets=pl.col("bucket"),
        delivery_counts=pl.col("n"),
        delivery_negative=pl.col("negative").sum(),
    )


def _goodbyes(batch: Batch) -> pl.DataFrame:
    """Goodbye heartbeats per key, by receive window: what stale_publisher reads to tell a
    planned stop from an outage."""
    byes = batch.heartbeats.filter(pl.col("bye"))
    return byes.group_by(KEYS).agg(goodbyes=pl.len().cast(pl.UInt64))


def rollup(batch: Batch) -> pa.Table:
    # A message refused as a whole is a row of batch.messages too (it was received and
    # advanced the sequence), so gaps before it are counted; it is not an accepted message.
    refused = pl.col("rejected") > 0
    accepted = batch.messages.group_by(KEYS).agg(
        messages=(~refused).sum(),
        records=pl.col("records").sum(),
        lost_messages=pl.col("lost").sum(),
        rejected_messages=refused.sum(),
    )
    rejected = batch.rejections.group_by(KEYS).agg(rejected=pl.col("rejected").sum())
    frame = (
        accepted.join(rejected, on=KEYS, how="full", coalesce=True)
        .join(_goodbyes(batch), on=KEYS, how="left")
        .join(_delivery(batch), on=KEYS, how="left")
        .with_columns(
            pl.col("delivery_buckets").fill_null(pl.lit([], dtype=pl.List(pl.UInt16))),
            pl.col("delivery_counts").fill_null(pl.lit([], dtype=pl.List(pl.UInt64))),
        )
        .fill_null(0)
    )
    return to_input_table(frame, INGEST_HEALTH)


def rejections(batch: Batch) -> pa.Table:
    frame = batch.rejections.group_by([*KEYS, "reason"]).agg(rejected=pl.col("rejected").sum())
    return to_input_table(frame, INGEST_REJECTIONS)
