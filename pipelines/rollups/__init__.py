"""The rollups: one function per output table, from a Batch to partial rows.

Every function is pure and its output merges with any other partial output
for the same keys inside ClickHouse, so runners may call compute() on any
split of the stream (per flush, per worker, per Kafka partition).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import pyarrow as pa

from pipelines.rollups import config_changes, ingest_health, publishers, rate_limits, tokens, traffic
from pipelines.windows.batch import Batch

ROLLUP_FUNCTIONS: Final[dict[str, Callable[[Batch], pa.Table]]] = {
    "traffic": traffic.rollup,
    "rate_limit_hits": rate_limits.rollup,
    "token_churn": tokens.rollup,
    "config_changes": config_changes.rollup,
    "ingest_health": ingest_health.rollup,
    "ingest_rejections": ingest_health.rejections,
    "publishers": publishers.rollup,
}


def compute(batch: Batch) -> dict[str, pa.Table]:
    """Partial rollups of one batch, keyed by contract rollup name."""
    return {name: fn(batch) for name, fn in ROLLUP_FUNCTIONS.items()}


__all__ = ["ROLLUP_FUNCTIONS", "compute"]
