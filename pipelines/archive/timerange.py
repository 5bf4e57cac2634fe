"""--from/--to values: an ISO 8601 instant (UTC unless it says otherwise) or unix seconds."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Final

from pipelines.errors import ConfigurationError


@dataclasses.dataclass(frozen=True, slots=True)
class TimeRange:
    """[start_ns, end_ns) in unix nanoseconds."""

    start_ns: int
    end_ns: int

    @classmethod
    def parse(cls, start: str, end: str) -> TimeRange:
        span = cls(parse_instant(start), parse_instant(end))
        if span.end_ns <= span.start_ns:
            msg = f"--to ({end}) must be after --from ({start})"
            raise ConfigurationError(msg)
        return span

    def hours(self) -> tuple[int, int]:
        """The smallest whole-hour range [from_s, to_s) holding this one, in unix seconds."""
        first = self.start_ns // 1_000_000_000
        last = -(-self.end_ns // 1_000_000_000)
        return first - first % 3600, -(-last // 3600) * 3600


# The rollups' windows are ClickHouse DateTime (seconds in UInt32): 1970-01-01 .. 2106-02-07, and a
# range is widened to whole hours (rebuild), so it ends at the last whole hour a window can start.
LAST_INSTANT_NS: Final = ((1 << 32) - 1) // 3600 * 3600 * 1_000_000_000


def parse_instant(text: str) -> int:
    """Unix nanoseconds of `2026-11-27T10:00:00Z`, `2026-11-27 10:00` (UTC), or `1795774500`."""
    value = text.strip()
    try:
        ns: int | None = int(float(value) * 1_000_000_000)
    except ValueError:  # nan included
        ns = None
    except OverflowError:  # inf, 1e400
        ns = LAST_INSTANT_NS + 1
    if ns is None:
        try:
            instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            msg = f"not a time: {text!r} (use ISO 8601 like 2026-11-27T10:00:00Z, or unix seconds)"
            raise ConfigurationError(msg) from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=dt.UTC)
        try:
            ns = int(instant.timestamp()) * 1_000_000_000 + instant.microsecond * 1_000
        except (OverflowError, OSError, ValueError):
            ns = LAST_INSTANT_NS + 1
    if not 0 <= ns <= LAST_INSTANT_NS:
        msg = f"out of range: {text!r} (the rollups hold 1970-01-01 to 2106-02-07T05:00:00Z)"
        raise ConfigurationError(msg)
    return ns


def format_instant(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="seconds")
