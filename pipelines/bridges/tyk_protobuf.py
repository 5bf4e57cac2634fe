"""Tyk's protobuf AnalyticsRecord (`serializer_type: protobuf`) read straight off the wire.

Why a small reader instead of generated code: the message is fixed and small
(tyk-pump's `analytics/analytics.proto`, package `normalproto`: a dozen nested
messages, no oneofs, no packed fields), and generated `_pb2` modules pin the
protobuf runtime to a narrow range (`>=7.35.1,<8` for the code in
tests/fixtures/tyk/proto), which would constrain every environment tykpulse is
installed into. Reading the wire format here costs ~150 lines, no dependency,
and lands in the same `TykAnalyticsRecord` as msgpack, so both encodings share
one conversion. The tests decode the fixtures Tyk Pump's Go code encoded and
compare every field with the manifest and with the generated `_pb2`.

Field numbers are the .proto's (facts, no code copied). Semantics follow
proto3: absent fields are zero, unknown fields are skipped, the last value of
a repeated scalar occurrence wins. What protobuf cannot carry compared with
msgpack: `Latency.Gateway`, `CollectionName`, nil-vs-empty `Tags` (absent
decodes as None, like the pump's decoder), GraphQL error paths (messages only).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, Final, NoReturn

from pipelines.bridges.tyk_records import (
    GoTime,
    TykAnalyticsRecord,
    TykCity,
    TykCountry,
    TykGeo,
    TykGraphError,
    TykGraphQLStats,
    TykLatency,
    TykLocation,
    TykMCPStats,
    TykNetworkStats,
)
from pipelines.errors import TykDecodeError

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5  # wire types
_U64: Final = 1 << 64
_DOUBLE: Final = struct.Struct("<d")

Field = tuple[int, int, Any]  # (field number, wire type, int | memoryview)


class _MalformedError(Exception):
    pass


def _fail(reason: str) -> NoReturn:
    raise _MalformedError(reason)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            _fail("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            _fail("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[Field]:
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            _fail("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                _fail(f"field {number}: length {size} past the end")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > end:
                _fail(f"field {number}: truncated fixed{width * 8}")
            yield number, wire, buf[pos : pos + width]
            pos += width
        else:
            _fail(f"field {number}: unsupported wire type {wire}")


# Readers check the wire type they were given: a field number arriving with another
# wire type is a malformed record, not something to coerce.


def _int64(value: Any) -> int:
    if not isinstance(value, int):
        _fail("expected a varint")
    return value - _U64 if value >= 1 << 63 else value


def _bool(value: Any) -> bool:
    return _int64(value) != 0


def _bytes(value: Any) -> memoryview:
    if not isinstance(value, memoryview):
        _fail("expected a length-delimited field")
    return value


def _text(value: Any) -> str:
    return bytes(_bytes(value)).decode("utf-8")


def _double(value: Any) -> float:
    if not isinstance(value, memoryview) or len(value) != 8:
        _fail("expected a fixed64 double")
    return float(_DOUBLE.unpack(value)[0])


def _message(buf: Any, readers: dict[int, tuple[str, Callable[[Any], Any]]]) -> dict[str, Any]:
    """Fields of one message as {python name: value}; unknown field numbers are skipped."""
    out: dict[str, Any] = {}
    for number, _wire, value in _fields(_bytes(buf)):
        reader = readers.get(number)
        if reader is not None:
            name, read = reader
            out[name] = read(value)
    return out


def _repeated_text(buf: Any, number: int) -> list[str]:
    return [_text(v) for n, _w, v in _fields(_bytes(buf)) if n == number]


def _map_entry(buf: Any, read_value: Callable[[Any], Any]) -> tuple[str, Any]:
    entry = _message(buf, {1: ("key", _text), 2: ("value", read_value)})
    return entry.get("key", ""), entry.get("value", read_value(memoryview(b"")))


def _timestamp(buf: Any) -> GoTime:
    ts = _message(buf, {1: ("seconds", _int64), 2: ("nanos", _int64)})
    return ts.get("seconds", 0), ts.get("nanos", 0)


def _latency(buf: Any) -> TykLatency:
    return TykLatency(**_message(buf, {1: ("total", _int64), 2: ("upstream", _int64)}))


def _network(buf: Any) -> TykNetworkStats:
    return TykNetworkStats(
        **_message(
            buf,
            {
                1: ("open_connections", _int64),
                2: ("closed_connections", _int64),
                3: ("bytes_in", _int64),
                4: ("bytes_out", _int64),
            },
        )
    )


def _city(buf: Any) -> TykCity:
    names: dict[str, str] = {}
    geoname_id = 0
    for number, _wire, value in _fields(_bytes(buf)):
        if number == 1:
            key, name = _map_entry(value, _text)
            names[key] = name
        elif number == 2:
            geoname_id = _int64(value) & 0xFFFFFFFF  # uint32
    return TykCity(geoname_id=geoname_id, names=names or None)


Readers = dict[int, tuple[str, Callable[[Any], Any]]]
_LOCATION: Final[Readers] = {1: ("latitude", _double), 2: ("longitude", _double), 3: ("time_zone", _text)}


def _geo(buf: Any) -> TykGeo:
    return TykGeo(
        **_message(
            buf,
            {
                1: ("country", lambda b: TykCountry(**_message(b, {1: ("iso_code", _text)}))),
                2: ("city", _city),
                3: (
                    "location",
                    lambda b: TykLocation(**_message(b, _LOCATION)),
                ),
            },
        )
    )


def _graphql(buf: Any) -> TykGraphQLStats:
    stats = TykGraphQLStats()
    types: dict[str, list[str]] = {}
    roots: list[str] = []
    errors: list[TykGraphError] = []
    for number, _wire, value in _fields(_bytes(buf)):
        if number == 1:
            stats.is_graphql = _bool(value)
        elif number == 2:
            key, fields = _map_entry(value, lambda b: _repeated_text(b, 1))
            types[key] = fields
        elif number == 3:
            stats.operation_type = _int64(value)
        elif number == 4:
            stats.variables = _text(value)
        elif number == 5:
            roots.append(_text(value))
        elif number == 6:
            stats.has_errors = _bool(value)
        elif number == 7:
            errors.append(TykGraphError(message=_text(value)))
    stats.types, stats.root_fields, stats.errors = types or None, roots or None, errors or None
    return stats


def _mcp(buf: Any) -> TykMCPStats:
    return TykMCPStats(
        **_message(
            buf,
            {
                1: ("is_mcp", _bool),
                2: ("jsonrpc_method", _text),
                3: ("primitive_type", _text),
                4: ("primitive_name", _text),
            },
        )
    )


_TOP: Final[dict[int, tuple[str, Callable[[Any], Any]]]] = {
    1: ("host", _text),
    2: ("method", _text),
    3: ("path", _text),
    4: ("raw_path", _text),
    5: ("content_length", _int64),
    6: ("user_agent", _text),
    7: ("day", _int64),
    8: ("month", _int64),
    9: ("year", _int64),
    10: ("hour", _int64),
    11: ("response_code", _int64),
    12: ("api_key", _text),
    13: ("timestamp", _timestamp),
    14: ("api_version", _text),
    15: ("api_name", _text),
    16: ("api_id", _text),
    17: ("org_id", _text),
    18: ("request_time", _int64),
    19: ("latency", _latency),
    20: ("raw_request", _text),
    21: ("raw_response", _text),
    22: ("ip_address", _text),
    23: ("geo", _geo),
    24: ("network", _network),
    26: ("alias", _text),
    27: ("track_path", _bool),
    28: ("expire_at", _timestamp),
    29: ("oauth_id", _text),
    30: ("time_zone", _text),
    31: ("api_schema", _text),
    32: ("graphql_stats", _graphql),
    33: ("mcp_stats", _mcp),
    34: ("original_path", _text),
    35: ("listen_path", _text),
}
_TAGS: Final = 25
_EPOCH_TIME: Final = (0, 0)


def decode_protobuf(element: bytes) -> TykAnalyticsRecord:
    """One element of `analytics-tyk-system-analytics[_N]_protobuf`; TykDecodeError if it is not one."""
    buf = memoryview(element)
    try:
        fields = _message(buf, _TOP)
        tags = _repeated_text(buf, _TAGS)
    except (_MalformedError, UnicodeDecodeError) as exc:
        raise TykDecodeError(encoding="protobuf", reason=str(exc)) from exc
    # An absent google.protobuf.Timestamp reads as its default instance, the unix epoch
    # (what tyk-pump's own decoder gets from AsTime() on nil); the gateway always sets both.
    fields.setdefault("timestamp", _EPOCH_TIME)
    fields.setdefault("expire_at", _EPOCH_TIME)
    return TykAnalyticsRecord(tags=tags or None, **fields)
