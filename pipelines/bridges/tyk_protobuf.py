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
a repeated scalar occurrence wins. Stricter than Go's decoder, which truncates:
a varint over 64 bits, or an integer outside its field's type (an int32 field
holding 2**40), makes the record malformed (pipelines.bridges.int_ranges), so
nothing unbounded reaches the publisher. What protobuf cannot carry compared with
msgpack: `Latency.Gateway`, `CollectionName`, nil-vs-empty `Tags` (absent
decodes as None, like the pump's decoder), GraphQL error paths (messages only).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any, Final, NoReturn

from pipelines.bridges.int_ranges import INT32, UINT32, IntRange
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
from pipelines.containers import container_limit
from pipelines.errors import TykDecodeError

_U64: Final = 1 << 64
_U64_MAX: Final = _U64 - 1
_DOUBLE: Final = struct.Struct("<d")

# A parsed field value: an int (varint), a (start, end) span into the buffer (length-delimited)
# or the raw bytes of a fixed64/fixed32. Spans avoid copying nested messages.
Span = tuple[int, int]
Fields = list[tuple[int, Any]]
Reader = Callable[[bytes, Any], Any]
Readers = dict[int, tuple[str, Reader]]


class _MalformedError(Exception):
    pass


def _fail(reason: str) -> NoReturn:
    raise _MalformedError(reason)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]  # IndexError past the end: reported as malformed by decode_protobuf
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result > _U64_MAX:  # a 10th byte over 1: 65 to 70 bits, which no proto type holds
                _fail("varint over 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            _fail("varint longer than 10 bytes")


class _FieldBudget(threading.local):
    """The fields the element being decoded may still have, nested messages included
    (container_limit of its size, set by decode_protobuf). A field can take two bytes and costs a
    tuple and its value (a string for a tag): 16 MiB of empty tags built 1.1 GB, 16 MiB of unknown
    fields 360 MB; Tyk's record has a few dozen."""

    left = 0


_budget: Final = _FieldBudget()


def _fields(buf: bytes, span: Span) -> Fields:
    """Every field of the message in buf[start:end], in wire order (the hot loop: kept flat),
    within the element's _FieldBudget (a nested message is read after its parent's fields)."""
    pos, end = span
    out: Fields = []
    append = out.append
    most = _budget.left
    # every field takes two bytes at least: a span that cannot hold more than `most` is not counted
    counted = end - pos > 2 * most
    while pos < end:
        if counted and len(out) >= most:
            _fail(f"more fields than {container_limit(len(buf))} in the element")
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        elif buf[pos + 1] < 0x80:  # two-byte tags: fields 16 and up
            tag = (tag & 0x7F) | (buf[pos + 1] << 7)
            pos += 2
        else:
            tag, pos = _varint(buf, pos)
        wire = tag & 7
        if tag < 8:
            _fail("field number 0")
        if wire == 2:
            size = buf[pos]
            if size < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                size = (size & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                size, pos = _varint(buf, pos)
            value: Any = (pos, pos + size)
            pos += size
        elif wire == 0:
            value = buf[pos]
            if value < 0x80:
                pos += 1
            else:
                value, pos = _varint(buf, pos)
        elif wire == 1:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == 5:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            _fail(f"field {tag >> 3}: unsupported wire type {wire}")
        if pos > end:
            _fail(f"field {tag >> 3} runs past the end of its message")
        append((tag >> 3, value))
    _budget.left -= len(out)
    return out


# Readers check the wire type they were given: a field number arriving with another
# wire type is a malformed record, not something to coerce.


def _int64(_buf: bytes, value: Any) -> int:
    if type(value) is not int:
        _fail("expected a varint")
    return value - _U64 if value >= 1 << 63 else value  # a varint is at most 64 bits (_varint)


def _ranged(kind: IntRange) -> Reader:
    """A reader of an int64 varint that must also fit `kind` (the .proto's int32, uint32)."""

    def read(buf: bytes, value: Any) -> int:
        number = _int64(buf, value)
        problem = kind.reason(number)
        if problem is not None:
            _fail(problem)
        return number

    return read


def _uint32(buf: bytes, value: Any) -> int:
    # uint32 travels unsigned: the varint itself (not its int64 reading) must fit
    if type(value) is not int:
        _fail("expected a varint")
    problem = UINT32.reason(value)
    if problem is not None:
        _fail(problem)
    return value


_int32: Final = _ranged(INT32)


def _bool(buf: bytes, value: Any) -> bool:
    return _int64(buf, value) != 0


def _span(value: Any) -> Any:  # a (start, end) span, checked
    if type(value) is not tuple:
        _fail("expected a length-delimited field")
    return value


def _text(buf: bytes, value: Any) -> str:
    start, end = _span(value)
    return buf[start:end].decode("utf-8")


def _double(_buf: bytes, value: Any) -> float:
    if type(value) is not bytes or len(value) != 8:
        _fail("expected a fixed64 double")
    return float(_DOUBLE.unpack(value)[0])


def _message(buf: bytes, value: Any, readers: Readers) -> dict[str, Any]:
    """Fields of one message as {python name: value}; unknown field numbers are skipped."""
    out: dict[str, Any] = {}
    for number, field in _fields(buf, _span(value)):
        reader = readers.get(number)
        if reader is not None:
            name, read = reader
            out[name] = read(buf, field)
    return out


def _repeated_text(buf: bytes, value: Any, number: int) -> list[str]:
    return [_text(buf, v) for n, v in _fields(buf, _span(value)) if n == number]


def _map_entry(buf: bytes, value: Any, read_value: Reader, empty: Any) -> tuple[str, Any]:
    entry = _message(buf, value, {1: ("key", _text), 2: ("value", read_value)})
    return entry.get("key", ""), entry.get("value", empty)


def _timestamp(buf: bytes, value: Any) -> GoTime:
    ts = _message(buf, value, {1: ("seconds", _int64), 2: ("nanos", _int32)})
    return ts.get("seconds", 0), ts.get("nanos", 0)


_LATENCY: Final[Readers] = {1: ("total", _int64), 2: ("upstream", _int64)}
_NETWORK: Final[Readers] = {
    1: ("open_connections", _int64),
    2: ("closed_connections", _int64),
    3: ("bytes_in", _int64),
    4: ("bytes_out", _int64),
}
_COUNTRY: Final[Readers] = {1: ("iso_code", _text)}
_LOCATION: Final[Readers] = {1: ("latitude", _double), 2: ("longitude", _double), 3: ("time_zone", _text)}
_MCP: Final[Readers] = {
    1: ("is_mcp", _bool),
    2: ("jsonrpc_method", _text),
    3: ("primitive_type", _text),
    4: ("primitive_name", _text),
}


def _latency(buf: bytes, value: Any) -> TykLatency:
    return TykLatency(**_message(buf, value, _LATENCY))


def _network(buf: bytes, value: Any) -> TykNetworkStats:
    return TykNetworkStats(**_message(buf, value, _NETWORK))


def _city(buf: bytes, value: Any) -> TykCity:
    names: dict[str, str] = {}
    geoname_id = 0
    for number, field in _fields(buf, _span(value)):
        if number == 1:
            key, name = _map_entry(buf, field, _text, "")
            names[key] = name
        elif number == 2:
            geoname_id = _uint32(buf, field)
    return TykCity(geoname_id=geoname_id, names=names or None)


def _geo(buf: bytes, value: Any) -> TykGeo:
    geo = TykGeo()
    for number, field in _fields(buf, _span(value)):
        if number == 1:
            geo.country = TykCountry(**_message(buf, field, _COUNTRY))
        elif number == 2:
            geo.city = _city(buf, field)
        elif number == 3:
            geo.location = TykLocation(**_message(buf, field, _LOCATION))
    return geo


def _graphql(buf: bytes, value: Any) -> TykGraphQLStats:
    stats = TykGraphQLStats()
    types: dict[str, list[str]] = {}
    roots: list[str] = []
    errors: list[TykGraphError] = []
    for number, field in _fields(buf, _span(value)):
        if number == 1:
            stats.is_graphql = _bool(buf, field)
        elif number == 2:
            key, fields = _map_entry(buf, field, lambda b, v: _repeated_text(b, v, 1), [])
            types[key] = fields
        elif number == 3:
            stats.operation_type = _int32(buf, field)
        elif number == 4:
            stats.variables = _text(buf, field)
        elif number == 5:
            roots.append(_text(buf, field))
        elif number == 6:
            stats.has_errors = _bool(buf, field)
        elif number == 7:
            errors.append(TykGraphError(message=_text(buf, field)))
    stats.types, stats.root_fields, stats.errors = types or None, roots or None, errors or None
    return stats


def _mcp(buf: bytes, value: Any) -> TykMCPStats:
    return TykMCPStats(**_message(buf, value, _MCP))


_TOP: Final[Readers] = {
    1: ("host", _text),
    2: ("method", _text),
    3: ("path", _text),
    4: ("raw_path", _text),
    5: ("content_length", _int64),
    6: ("user_agent", _text),
    7: ("day", _int32),
    8: ("month", _int32),
    9: ("year", _int32),
    10: ("hour", _int32),
    11: ("response_code", _int32),
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
    buf = bytes(element)
    fields: dict[str, Any] = {}
    tags: list[str] = []
    _budget.left = container_limit(len(buf))
    try:
        for number, value in _fields(buf, (0, len(buf))):
            if number == _TAGS:
                tags.append(_text(buf, value))
                continue
            reader = _TOP.get(number)
            if reader is not None:
                name, read = reader
                fields[name] = read(buf, value)
    except (_MalformedError, UnicodeDecodeError, IndexError) as exc:
        raise TykDecodeError(encoding="protobuf", reason=str(exc) or type(exc).__name__) from exc
    # An absent google.protobuf.Timestamp reads as its default instance, the unix epoch
    # (what tyk-pump's own decoder gets from AsTime() on nil); the gateway always sets both.
    fields.setdefault("timestamp", _EPOCH_TIME)
    fields.setdefault("expire_at", _EPOCH_TIME)
    return TykAnalyticsRecord(tags=tags or None, **fields)
