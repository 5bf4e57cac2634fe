"""The report's tables say what their titles say."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.report.page import largest_5xx_increases

pytestmark = pytest.mark.unit


def impact(rates: list[tuple[str, int, int, int, int]]) -> pd.DataFrame:
    """(change, 5xx before, requests before, 5xx after, requests after) -> change_impact's columns."""
    rows = [
        {
            "change_at": pd.Timestamp("2026-01-01 10:00") + pd.Timedelta(minutes=i),
            "commands": name,
            "before_rate_5xx": b5 / b,
            "after_rate_5xx": a5 / a,
            "delta_rate_5xx": a5 / a - b5 / b,
        }
        for i, (name, b5, b, a5, a) in enumerate(rates)
    ]
    return pd.DataFrame(rows)


def test_only_changes_followed_by_more_5xx_are_listed_largest_first() -> None:
    frame = impact(
        [
            ("fell", 50, 100, 1, 100),  # 50 % -> 1 %: listed before the fix, as the "largest increase"
            ("rose a little", 1, 100, 3, 100),
            ("flat", 2, 100, 2, 100),
            ("rose a lot", 0, 100, 40, 100),
        ]
    )
    assert largest_5xx_increases(frame)["commands"].tolist() == ["rose a lot", "rose a little"]


def test_when_every_change_lowered_5xx_nothing_is_listed() -> None:
    assert largest_5xx_increases(impact([("fell", 9, 100, 1, 100)])).empty
    assert largest_5xx_increases(pd.DataFrame()).empty
