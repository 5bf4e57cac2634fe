"""Pure parts of the analyst API: scopes render to parameters, storms and spikes are found."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from pipelines.analyst import Scope, find_spikes, find_storms

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)


def test_scope_renders_filters_as_parameters() -> None:
    scope = Scope(start=T0, end=T0 + dt.timedelta(hours=1), org_id="o1", api_id=["a", "b"], grain="1h")
    where, params = scope.where()
    assert where == (
        " WHERE window_start >= toDateTime({start:Int64}, 'UTC')"
        " AND window_start < toDateTime({end:Int64}, 'UTC')"
        " AND org_id IN {org_ids:Array(String)} AND api_id IN {api_ids:Array(String)}"
    )
    assert params == {"start": 1_795_773_600, "end": 1_795_777_200, "org_ids": ["o1"], "api_ids": ["a", "b"]}
    assert scope.view("traffic") == "tykpulse.traffic_1h"
    assert Scope().where() == ("", {})
    assert "api_id" not in Scope(api_id="a").where(api=False)[0]


def test_scope_rejects_bad_grain_and_database() -> None:
    with pytest.raises(ValueError, match="grain"):
        Scope(grain="5m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="database"):
        Scope(database="x; DROP")


def test_naive_times_are_utc_and_last_ends_now() -> None:
    naive = Scope(start=T0.replace(tzinfo=None)).where()[1]["start"]
    assert naive == int(T0.timestamp())
    scope = Scope.last(minutes=30, now=T0)
    assert (scope.start, scope.end) == (T0 - dt.timedelta(minutes=30), T0)


def hits_frame(series: dict[str, list[int]]) -> pd.DataFrame:
    rows = []
    for api, values in series.items():
        for i, value in enumerate(values):
            if value:
                rows.append(
                    {
                        "window_start": pd.Timestamp(T0) + pd.Timedelta(minutes=i),
                        "api_id": api,
                        "rate_limited": value,
                    }
                )
    return pd.DataFrame(rows)


def test_a_storm_is_its_consecutive_windows_above_the_baseline() -> None:
    quiet = [3, 2, 4, 3, 2, 3, 4, 2, 3, 3]
    stormy = [3, 2, 3, 400, 500, 450, 3, 0, 2, 3]
    storms = find_storms(hits_frame({"calm": quiet, "hot": stormy}), factor=5, min_hits=50)
    assert storms[["api_id", "windows", "peak_hits", "total_hits"]].to_dict("records") == [
        {"api_id": "hot", "windows": 3, "peak_hits": 500, "total_hits": 1350}
    ]
    assert storms["onset"].iloc[0] == pd.Timestamp(T0) + pd.Timedelta(minutes=3)
    assert storms["end"].iloc[0] == pd.Timestamp(T0) + pd.Timedelta(minutes=6)


def test_two_separate_bursts_are_two_storms_and_gaps_count_as_zero() -> None:
    storms = find_storms(hits_frame({"hot": [0, 100, 0, 0, 120, 130, 0, 0, 0, 1]}), factor=5, min_hits=50)
    assert storms["windows"].tolist() == [1, 2]
    assert find_storms(pd.DataFrame()).empty


def test_spikes_are_robust_to_the_spike_itself() -> None:
    frame = pd.DataFrame({"churn": [20, 22, 19, 21, 20, 200, 21, 18]})
    spikes = find_spikes(frame, "churn", factor=3)
    assert spikes["churn"].tolist() == [200]
    flat = pd.DataFrame({"churn": [5, 5, 5, 5, 40]})
    assert find_spikes(flat, "churn")["churn"].tolist() == [40]


def test_scaled_clock_starts_at_its_first_reading_and_ends_at_now() -> None:
    from pipelines.simulate.fleet import scaled_clock

    wall = [1_000 * 10**9]
    clock = scaled_clock(60, 10, lambda: wall[0])
    wall[0] += 5 * 10**9  # time passes before the run starts: it must not count
    assert clock() == wall[0] - 590 * 10**9  # 10 s of wall time replay 600 s, ending at now
    wall[0] += 10 * 10**9
    assert clock() == wall[0]
