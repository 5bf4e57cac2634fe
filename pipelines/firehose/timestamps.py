"""Record timestamps in the protocol's three forms, normalised to unix nanoseconds.

Accepted: an int of unix nanoseconds, an RFC 3339 string with an offset (Go's
JSON form, up to nanosecond precision) and a msgpack timestamp extension (an Ext
as the decoders leave it, read to the nanosecond, or the timezone-aware datetime
msgspec decodes it to as Any, which keeps microseconds: keep_extensions puts the
Ext back). Anything else (floats, bools, naive times, numbers outside the int64
range, instants before the unix epoch, a malformed extension) is invalid and
reported as INVALID_NS.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from pipelines.errors import DECODE_ERRORS
from pipelines.firehose.protocol import WireTimestamp

INVALID_NS: Final = np.iinfo(np.int64).min
_INT64_MAX: Final = np.iinfo(np.int64).max
_NS_PER_S: Final = 1_000_000_000
_TIMESTAMP_EXT: Final = -1

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
    elif isinstance(value, msgspec.msgpack.Ext) and (stamp := _extension_ns(value)) is not None:
        ns = stamp
    else:
        return None
    if ns < 0 or ns > _INT64_MAX:
        return None
    return ns


def _extension_ns(value: msgspec.msgpack.Ext) -> int | None:
    """Unix nanoseconds of a timestamp extension in any of its three forms, exactly: msgspec's
    datetime keeps microseconds, rounded, which would file a record up to 500 ns before a window's
    end in the next window. None for another extension, another length, or nanoseconds past
    999_999_999 (msgspec refuses those too; the native core leaves them to this reader)."""
    if value.code != _TIMESTAMP_EXT:
        return None
    data = bytes(value.data)
    if len(data) == 4:
        return int.from_bytes(data, "big") * _NS_PER_S
    if len(data) == 8:
        both = int.from_bytes(data, "big")
        seconds, nanos = both & 0x3_FFFF_FFFF, both >> 34
    elif len(data) == 12:
        nanos, seconds = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big", signed=True)
    else:
        return None
    return seconds * _NS_PER_S + nanos if nanos < _NS_PER_S else None


class _Stamped(msgspec.Struct):
    timestamp: WireTimestamp = None


_RAW_RECORDS: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])
_STAMPED: Final = msgspec.msgpack.Decoder(_Stamped)


def keep_extensions(payload: bytes, records: list[Any]) -> None:
    """Give the map records decoded as Any from the msgpack `payload` their timestamp extensions
    back, in place, where msgspec made datetimes of them (microseconds): the archive re-encodes
    what it decoded, and a rebuild or replay would file a record up to 500 ns before a window's
    end in the next window. A record whose timestamp the record structs cannot read (a key
    repeated with a value of another type) keeps its datetime: the worker rejected it."""
    stamped = [
        i
        for i, r in enumerate(records)
        if isinstance(r, dict) and isinstance(r.get("timestamp"), dt.datetime)
    ]
    if not stamped:
        return
    raws = _RAW_RECORDS.decode(payload)
    for i in stamped:
        _keep_extension(raws[i], records[i])


def _keep_extension(raw: msgspec.Raw, record: dict[str, Any]) -> None:
    try:
        stamp = _STAMPED.decode(raw).timestamp
    except DECODE_ERRORS:
        return
    if isinstance(stamp, msgspec.msgpack.Ext):
        record["timestamp"] = stamp


def records_one_by_one(payload: bytes) -> list[Any] | None:
    """The records of a msgpack array whose decode as a whole failed, decoded as Any one by one,
    their timestamp extensions kept (keep_extensions): those msgspec cannot decode alone (a
    malformed timestamp extension) are left out, as the worker rejects each alone and accepts the
    rest. None when the payload is no array of whole values."""
    try:
        raws = _RAW_RECORDS.decode(payload)
    except DECODE_ERRORS:
        return None
    records = []
    for raw in raws:
        try:
            record = msgspec.msgpack.decode(raw)
        except DECODE_ERRORS:
            continue
        if isinstance(record, dict) and isinstance(record.get("timestamp"), dt.datetime):
            _keep_extension(raw, record)
        records.append(record)
    return records


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
