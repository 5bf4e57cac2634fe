from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.errors import ConfigurationError
from pipelines.windows import LogHistogram, TumblingWindows, nearest_rank
from tests.conftest import T0_NS

pytestmark = pytest.mark.unit


def test_window_start_floors_to_the_width() -> None:
    windows = TumblingWindows(60)
    assert windows.start_s(T0_NS) == T0_NS // 10**9
    assert windows.start_s(T0_NS + 59_999_999_999) == T0_NS // 10**9
    assert windows.start_s(T0_NS + 60 * 10**9) == T0_NS // 10**9 + 60
    ts = np.array([T0_NS, T0_NS + 61 * 10**9, T0_NS - 1], dtype=np.int64)
    assert windows.starts_s(ts).tolist() == [T0_NS // 10**9, T0_NS // 10**9 + 60, T0_NS // 10**9 - 60]


@pytest.mark.parametrize("width", [0, 7, 3601, 7200])
def test_widths_must_tile_an_hour(width: int) -> None:
    with pytest.raises(ConfigurationError):
        TumblingWindows(width)


@pytest.mark.parametrize("width", [120, 300, 900, 3600])
def test_widths_must_tile_a_minute(width: int) -> None:
    # the `_1m` tables would hold a whole window under one minute (traffic_1m: 5 minutes of requests)
    with pytest.raises(ConfigurationError):
        TumblingWindows(width)


@pytest.mark.parametrize("width", [1, 10, 15, 30, 60])
def test_valid_widths(width: int) -> None:
    assert TumblingWindows(width).start_s(T0_NS + 3599 * 10**9) % width == 0


HIST = LogHistogram(0.01)


def counts(values: list[int]) -> dict[int, int]:
    indexes, n = np.unique(HIST.bucket_indexes(np.array(values, dtype=np.int64)), return_counts=True)
    return {int(i): int(c) for i, c in zip(indexes, n, strict=True)}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=600_000), min_size=1, max_size=300),
    st.sampled_from([0.01, 0.5, 0.95, 0.99, 1.0]),
)
def test_histogram_quantile_is_within_relative_error_of_nearest_rank(values: list[int], q: float) -> None:
    exact = nearest_rank(sorted(values), q)
    approx = HIST.quantile(counts(values), q)
    assert abs(approx - exact) <= 0.01 * exact + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=2, max_size=200), st.data())
def test_histograms_merge_by_adding_counts(values: list[int], data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=1, max_value=len(values) - 1))
    merged = counts(values[:cut])
    for index, n in counts(values[cut:]).items():
        merged[index] = merged.get(index, 0) + n
    assert merged == counts(values)


def test_zero_and_negative_latencies_land_in_bucket_zero() -> None:
    assert HIST.bucket_indexes(np.array([0, -5, 1], dtype=np.int64)).tolist() == [0, 0, 1]
    assert HIST.representative(0) == 0.0
    assert math.isnan(HIST.quantile({}, 0.5))


def test_nearest_rank_definition() -> None:
    assert nearest_rank([1, 2, 3, 4], 0.5) == 2
    assert nearest_rank([1, 2, 3, 4], 0.51) == 3
    assert nearest_rank([5], 0.99) == 5
