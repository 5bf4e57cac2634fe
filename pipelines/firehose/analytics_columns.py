"""Analytics records as columns: the shape every analytics message has after decode.

The native core decodes a msgpack payload straight into a MessageColumns
(pipelines._native, native/src/decode.rs). A payload it declines (a bad record,
JSON, an unusual timestamp form) is decoded record by record by the reference
path in codec.py, with its rejection reasons, and the records it accepts are
turned into the same columns (from_records). Everything after decode therefore
sees one shape, whichever decoder produced it.

The receive side appends each accepted message's columns to the flush's
FlushColumns, natively: the ids stay dictionary-encoded (a firehose repeats few
distinct org and API ids) and no Python object is made per record until the
flush turns them into a frame (FlushAnalytics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines._native import FlushColumns, MessageColumns
from pipelines.firehose.timestamps import to_ns_array

__all__ = ["FlushAnalytics", "FlushColumns", "MessageColumns", "decode", "from_records"]

Int64s = npt.NDArray[np.int64]
Codes = npt.NDArray[np.uint32]


def decode(payload: bytes, count: int) -> MessageColumns | None:
    """The native decoder's columns of a msgpack payload of `count` records, or None if it declines."""
    return MessageColumns.decode(payload, count)


def from_records(records: Sequence[Any]) -> MessageColumns:
    """Columns of records the reference decoder built (protocol.AnalyticsRecord)."""
    return MessageColumns.from_columns(
        to_ns_array([r.timestamp for r in records]).tolist(),
        [r.org_id for r in records],
        [r.api_id for r in records],
        [r.response_code for r in records],
        [r.latency.total for r in records],
    )


@dataclasses.dataclass(frozen=True, slots=True)
class FlushAnalytics:
    """A flush's analytics records as numpy columns, ids still as codes into their values."""

    timestamp_ns: Int64s
    org_values: list[str]
    org_codes: Codes
    api_values: list[str]
    api_codes: Codes
    response_code: Int64s
    latency_ms: Int64s

    @classmethod
    def of(cls, columns: FlushColumns | MessageColumns) -> FlushAnalytics:
        """Numpy views of the native columns (one copy out of Rust, none after)."""
        timestamp_ns, (org_values, org_codes), (api_values, api_codes), response_code, latency_ms = (
            columns.columns()
        )
        return cls(
            np.frombuffer(timestamp_ns, "<i8"),
            org_values,
            np.frombuffer(org_codes, "<u4"),
            api_values,
            np.frombuffer(api_codes, "<u4"),
            np.frombuffer(response_code, "<i8"),
            np.frombuffer(latency_ms, "<i8"),
        )

    def __len__(self) -> int:
        return len(self.timestamp_ns)

    def keep(self, mask: npt.NDArray[np.bool_]) -> FlushAnalytics:
        """Only the records where `mask` is true."""
        return dataclasses.replace(
            self,
            timestamp_ns=self.timestamp_ns[mask],
            org_codes=self.org_codes[mask],
            api_codes=self.api_codes[mask],
            response_code=self.response_code[mask],
            latency_ms=self.latency_ms[mask],
        )

    def org_id(self) -> pl.Series:
        return pl.Series(self.org_values, dtype=pl.Utf8).gather(self.org_codes)

    def api_id(self) -> pl.Series:
        return pl.Series(self.api_values, dtype=pl.Utf8).gather(self.api_codes)
