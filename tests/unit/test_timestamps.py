from __future__ import annotations

import datetime as dt

import msgspec
import numpy as np
import pytest

from pipelines.firehose.timestamps import (
    INVALID_NS,
    format_rfc3339_ns,
    keep_extensions,
    parse_rfc3339_ns,
    to_ns,
    to_ns_array,
)
from tests.conftest import T0_NS
from tests.helpers import timestamp_ext

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T10:15:00Z", T0_NS),
        ("2026-11-27T10:15:00.123456789Z", T0_NS + 123_456_789),
        ("2026-11-27T10:15:00.5Z", T0_NS + 500_000_000),
        ("2026-11-27T11:15:00+01:00", T0_NS),
        ("2026-11-27T05:15:00.000000001-05:00", T0_NS + 1),
        ("2026-11-27t10:15:00z", T0_NS),
    ],
)
def test_rfc3339_keeps_nanoseconds_and_offsets(text: str, expected: int) -> None:
    assert parse_rfc3339_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T10:15:00",
        "2026-11-27",
        "yesterday",
        "2026-13-27T10:15:00Z",
        "2026-11-27T10:15:00.1234567890Z",
    ],
)
def test_rfc3339_without_offset_or_malformed_is_invalid(text: str) -> None:
    assert parse_rfc3339_ns(text) is None


@pytest.mark.parametrize(
    "value",
    [1.5e18, True, None, -1, 2**63, dt.datetime(2026, 1, 1), [1, 2], float("nan"), "1795774500000000000"],
)
def test_non_protocol_values_are_invalid(value: object) -> None:
    assert to_ns(value) is None


def test_aware_datetime_converts() -> None:
    assert to_ns(dt.datetime(2026, 11, 27, 10, 15, tzinfo=dt.UTC)) == T0_NS


def test_array_fast_path_and_mixed_path_agree() -> None:
    ints = [T0_NS, T0_NS + 1, -5]
    assert to_ns_array(ints).tolist() == [T0_NS, T0_NS + 1, INVALID_NS]
    mixed = [T0_NS, "2026-11-27T10:15:00Z", 2**70, True]
    assert to_ns_array(mixed).tolist() == [T0_NS, T0_NS, INVALID_NS, INVALID_NS]
    assert to_ns_array([]).dtype == np.int64


def test_format_round_trips() -> None:
    for ns in (T0_NS, T0_NS + 123_456_789, T0_NS + 1):
        assert parse_rfc3339_ns(format_rfc3339_ns(ns)) == ns


def test_records_decoded_as_any_get_their_timestamp_extensions_back() -> None:
    ext = timestamp_ext(T0_NS // 1_000_000_000 - 1, 999_999_999, 8)
    payload = msgspec.msgpack.encode([{"timestamp": ext}, {"timestamp": T0_NS}, [ext], {"other": ext}])
    records = msgspec.msgpack.decode(payload)
    assert to_ns(records[0]["timestamp"]) == T0_NS  # the datetime msgspec builds: rounded
    keep_extensions(payload, records)
    assert records[0]["timestamp"] == ext
    assert to_ns(records[0]["timestamp"]) == T0_NS - 1
    assert records[1:] == msgspec.msgpack.decode(payload)[1:]  # only record timestamps are put back
