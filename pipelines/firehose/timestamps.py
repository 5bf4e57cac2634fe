"""Record timestamps in the protocol's three forms, normalised to unix nanoseconds.

Accepted: an int of unix nanoseconds, an RFC 3339 string with an offset (Go's
JSON form, up to nanosecond precision) and a msgpack timestamp extension (an Ext
as the decoders leave it, or the timezone-aware datetime msgspec decodes it to
as Any; msgspec keeps microseconds either way). Anything else (floats, bools,
naive times, numbers outside the int64 range, instants before the unix epoch)
is invalid and reported as INVALID_NS.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

INVALID_NS: Final = np.iinfo(np.int64).min
_INT64_MAX: Final = np.iinfo(np.int64).max

_RFC3339 = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})$"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_rfc3339_ns(text: str) -> int | None:
    """Unix nanoseconds of an RFC 3339 timestamp with offset, or None."""
    match = _RFC3339.match(text)
    if match is None:
        return None
    tz = match["tz"].upper().replace("Z", "+00:00")
    try:
        base = dt.datetime.fromisoformat(match["base"].replace("t", "T").replace(" ", "T") + tz)
    except ValueError:
        return None
    frac = (match["frac"] or "").ljust(9, "0")
    return _datetime_ns(base) + int(frac)


def _datetime_ns(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def to_ns(value: Any) -> int | None:
    """One timestamp in any protocol form to unix nanoseconds; None when invalid."""
    if type(value) is int:
        ns = value
    elif isinstance(value, str):
        parsed = parse_rfc3339_ns(value)
        if parsed is None:
            return None
        ns = parsed
    elif isinstance(value, dt.datetime) and value.tzinfo is not None:
        ns = _datetime_ns(value)
    elif isinstance(value, msgspec.msgpack.Ext) and isinstance(stamp := _extension(value), dt.datetime):
        ns = _datetime_ns(stamp)
    else:
        return None
    if ns < 0 or ns > _INT64_MAX:
        return None
    return ns


def _extension(value: msgspec.msgpack.Ext) -> Any:
    """What msgspec makes of an extension decoded as Any: a datetime for a timestamp (with its
    microseconds, as a field of type Any holds it), the Ext itself for another, None if malformed."""
    try:
        return msgspec.msgpack.decode(msgspec.msgpack.encode(value))
    except msgspec.DecodeError:  # a malformed or out-of-range timestamp extension
        return None


def to_ns_array(values: Sequence[Any]) -> npt.NDArray[np.int64]:
    """Vectorised to_ns: invalid entries become INVALID_NS.

    The all-int case (what tykpulse's own publishers send) converts in one
    numpy call; mixed input falls back to the per-value parser.
    """
    if not values:
        return np.empty(0, dtype=np.int64)
    if set(map(type, values)) == {int}:
        try:
            out = np.array(values, dtype=np.int64)
        except OverflowError:
            pass
        else:
            out[out < 0] = INVALID_NS
            return out
    parsed = [to_ns(v) for v in values]
    return np.array([INVALID_NS if p is None else p for p in parsed], dtype=np.int64)


def format_rfc3339_ns(ns: int) -> str:
    """Go's RFC 3339 nanosecond form in UTC, e.g. 2026-11-27T10:15:02.123456789Z."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z" if frac else f"{base}Z"
