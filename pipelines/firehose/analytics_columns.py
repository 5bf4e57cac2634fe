"""Analytics records as columns: the shape every analytics message has after decode.

The native core (pipelines._native.decode_analytics) decodes a msgpack payload
straight into these columns. A payload it declines (a bad record, JSON, an
unusual timestamp form; see native/src/decode.rs) is decoded record by record
by the reference path in codec.py, with its rejection reasons, and the records
it accepts are turned into the same columns. Everything after decode therefore
sees one shape, whichever decoder produced it.

The two id columns stay dictionary-encoded until the flush (AnalyticsBuffer):
a firehose repeats few distinct org and API ids, so each is a Python string
once per message, not once per record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines._native import decode_analytics
from pipelines.firehose.timestamps import to_ns_array

Int64s = npt.NDArray[np.int64]
Codes = npt.NDArray[np.uint32]


@dataclasses.dataclass(frozen=True, slots=True)
class AnalyticsColumns:
    """One message's analytics records; timestamps in unix ns (INVALID_NS when invalid)."""

    timestamp_ns: Int64s
    org_values: list[str]
    org_codes: Codes
    api_values: list[str]
    api_codes: Codes
    response_code: Int64s
    latency_ms: Int64s

    def __len__(self) -> int:
        return len(self.timestamp_ns)

    @classmethod
    def decode(cls, payload: bytes, count: int) -> AnalyticsColumns | None:
        """The native decoder's columns of a msgpack payload of `count` records, or None if it declines."""
        native = decode_analytics(payload, count)
        if native is None:
            return None
        timestamp_ns, (org_values, org_codes), (api_values, api_codes), response_code, latency_ms = native
        return cls(
            np.frombuffer(timestamp_ns, "<i8"),
            org_values,
            np.frombuffer(org_codes, "<u4"),
            api_values,
            np.frombuffer(api_codes, "<u4"),
            np.frombuffer(response_code, "<i8"),
            np.frombuffer(latency_ms, "<i8"),
        )

    @classmethod
    def from_records(cls, records: Sequence[Any]) -> AnalyticsColumns:
        """Columns of records the reference decoder built (protocol.AnalyticsRecord)."""
        org_values, org_codes = _dictionary([r.org_id for r in records])
        api_values, api_codes = _dictionary([r.api_id for r in records])
        return cls(
            to_ns_array([r.timestamp for r in records]),
            org_values,
            org_codes,
            api_values,
            api_codes,
            # list comprehensions, then one numpy conversion: the cheapest way out of Python objects
            np.array([r.response_code for r in records], np.int64),
            np.array([r.latency.total for r in records], np.int64),
        )


def _dictionary(texts: list[str]) -> tuple[list[str], Codes]:
    index: dict[str, int] = {}
    codes = [index.setdefault(text, len(index)) for text in texts]
    return list(index), np.array(codes, np.uint32)


class _Dictionary:
    """Distinct strings of one column across many messages, each with its flush-wide code."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def recode(self, values: list[str], codes: Codes) -> Codes:
        """A message's codes (into its own `values`) as codes into this dictionary."""
        index = self.index
        mapping = np.array([index.setdefault(value, len(index)) for value in values], np.uint32)
        return mapping[codes] if len(codes) else codes

    def strings(self, codes: Codes) -> pl.Series:
        return pl.Series(list(self.index), dtype=pl.Utf8).gather(codes)


@dataclasses.dataclass(frozen=True, slots=True)
class FlushAnalytics:
    """A flush's analytics records, in arrival order, ids still as codes (AnalyticsBuffer.take)."""

    timestamp_ns: Int64s
    org_codes: Codes
    api_codes: Codes
    response_code: Int64s
    latency_ms: Int64s
    org: _Dictionary
    api: _Dictionary

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
        return self.org.strings(self.org_codes)

    def api_id(self) -> pl.Series:
        return self.api.strings(self.api_codes)


class AnalyticsBuffer:
    """Analytics columns of the messages received since the last flush (cheap appends)."""

    def __init__(self) -> None:
        self._org = _Dictionary()
        self._api = _Dictionary()
        self._parts: list[tuple[Int64s, Codes, Codes, Int64s, Int64s]] = []

    def append(self, columns: AnalyticsColumns) -> None:
        self._parts.append(
            (
                columns.timestamp_ns,
                self._org.recode(columns.org_values, columns.org_codes),
                self._api.recode(columns.api_values, columns.api_codes),
                columns.response_code,
                columns.latency_ms,
            )
        )

    def take(self) -> FlushAnalytics:
        """Everything appended, as one set of columns."""
        if not self._parts:
            empty_i64, empty_codes = np.empty(0, np.int64), np.empty(0, np.uint32)
            return FlushAnalytics(
                empty_i64, empty_codes, empty_codes, empty_i64, empty_i64, self._org, self._api
            )
        ts, org, api, code, latency = (np.concatenate(column) for column in zip(*self._parts, strict=True))
        return FlushAnalytics(ts, org, api, code, latency, self._org, self._api)
