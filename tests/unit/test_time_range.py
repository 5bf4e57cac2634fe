"""--from/--to: every form of a time, and a clear error (never a traceback) for one out of range."""

from __future__ import annotations

import pytest

from pipelines.archive.timerange import LAST_INSTANT_NS, TimeRange, parse_instant
from pipelines.errors import ConfigurationError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-11-27T10:00:00Z", 1_795_773_600 * 10**9),
        ("2026-11-27 11:00:00+01:00", 1_795_773_600 * 10**9),
        ("2026-11-27T10:00", 1_795_773_600 * 10**9),
        ("1795773600", 1_795_773_600 * 10**9),
        ("1795773600.5", 1_795_773_600_500_000_000),
        ("0", 0),
    ],
)
def test_the_forms_of_a_time(text: str, ns: int) -> None:
    assert parse_instant(text) == ns


# Found by attack: each of these ended `rebuild` in an OverflowError or pyarrow's ArrowInvalid.
@pytest.mark.parametrize(
    "text", ["inf", "-inf", "1e400", "-1000000000", "5000000000", "4294967295", "9999-12-31T23:00:00Z"]
)
def test_a_time_the_rollups_cannot_hold_is_a_clear_error(text: str) -> None:
    with pytest.raises(ConfigurationError, match="out of range"):
        parse_instant(text)


def test_the_last_instant_still_makes_whole_hours_a_window_can_start_at() -> None:
    span = TimeRange(LAST_INSTANT_NS - 3600 * 10**9, LAST_INSTANT_NS)
    assert span.hours()[1] < 1 << 32


@pytest.mark.parametrize("text", ["nan", "yesterday", ""])
def test_what_is_not_a_time_says_so(text: str) -> None:
    with pytest.raises(ConfigurationError, match="not a time"):
        parse_instant(text)
