"""Shape a rollup's polars frame into exactly the Arrow table its _in table expects."""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from sinks.clickhouse.contract import Aggregate

_POLARS_TYPES: dict[str, Any] = {
    "DateTime('UTC')": pl.UInt32,
    "String": pl.Utf8,
    "LowCardinality(String)": pl.Utf8,
    "UInt64": pl.UInt64,
    "UInt32": pl.UInt32,
    "DateTime64(3, 'UTC')": pl.Datetime("ms", "UTC"),
    "Array(UInt16)": pl.List(pl.UInt16),
    "Array(UInt64)": pl.List(pl.UInt64),
}


def to_input_table(frame: pl.DataFrame, rollup: Aggregate) -> pa.Table:
    """Select and cast the contract's input columns, in the contract's order."""
    columns = [pl.col(c.name).cast(_POLARS_TYPES[c.type]) for c in rollup.input_columns]
    return frame.select(columns).to_arrow()
