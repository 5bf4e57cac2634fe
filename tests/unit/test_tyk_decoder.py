"""The production decoder of Tyk's analytics formats against Tyk Pump's own encoder output.

Every fixture (tests/fixtures/tyk/analytics) was encoded by tyk-pump's serializer; each
field our decoder returns is compared with the manifest's Go JSON view, for msgpack and for
protobuf (with protobuf's documented losses spelled out). The protobuf wire reader is also
checked against the generated `_pb2` on random messages.
"""

from __future__ import annotations

import copy
import tracemalloc
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.tyk_protobuf import decode_protobuf
from pipelines.bridges.tyk_records import FirehoseConverter, decode_msgpack, firehose_time
from pipelines.errors import TykDecodeError
from pipelines.firehose.codec import DecodedMessage, MessageDecoder
from pipelines.firehose.protocol import TOPIC_ANALYTICS
from tests.helpers import analytics_rows, message, protobuf_field
from tests.unit.test_tyk_fixture_files import (
    FIXTURES,
    RECORDS,
    _ids,
    assert_same,
    expected_msgpack,
    pb2,
)

pytestmark = pytest.mark.unit

ZERO_GRAPHQL = {
    "Variables": "",
    "RootFields": None,
    "Types": None,
    "Errors": None,
    "OperationType": 0,
    "HasErrors": False,
    "IsGraphQL": False,
}
ZERO_MCP = {"IsMCP": False, "JSONRPCMethod": "", "PrimitiveType": "", "PrimitiveName": ""}


def _builtins(record: Any) -> dict[str, Any]:
    """The decoded struct keyed by Go field names (msgspec encodes with the wire names)."""
    out: dict[str, Any] = msgspec.msgpack.decode(msgspec.msgpack.encode(record))  # tuples -> lists
    return out


def expected_protobuf(entry: dict[str, Any]) -> dict[str, Any]:
    """The Go-named view minus what the .proto cannot carry (see the fixtures README)."""
    exp = copy.deepcopy(expected_msgpack(entry))
    exp["Latency"]["Gateway"] = 0
    exp["CollectionName"] = ""
    exp["Tags"] = exp["Tags"] or None
    exp["Geo"]["City"]["Names"] = exp["Geo"]["City"]["Names"] or None
    gql = exp["GraphQLStats"]
    if gql["IsGraphQL"]:
        gql["Errors"] = [{"Message": e["Message"], "Path": None} for e in gql["Errors"] or []] or None
        gql["RootFields"] = gql["RootFields"] or None
        gql["Types"] = gql["Types"] or None
    else:
        exp["GraphQLStats"] = dict(ZERO_GRAPHQL)
    if not exp["MCPStats"]["IsMCP"]:
        exp["MCPStats"] = dict(ZERO_MCP)
    return exp


@pytest.mark.parametrize("entry", RECORDS, ids=_ids(RECORDS))
def test_msgpack_every_field(entry: dict[str, Any]) -> None:
    record = decode_msgpack((FIXTURES / entry["msgpack_file"]).read_bytes())
    got = _builtins(record)
    assert got.pop("TimeZone") == ""  # protobuf-only field
    assert_same(got, expected_msgpack(entry), "")
    assert record.timestamp_ns == entry["timestamp_unix_ns"]
    assert record.expire_at_ns == entry["expire_at_unix_ns"]
    assert record.collection_name == entry["collection_name"]


@pytest.mark.parametrize("entry", RECORDS, ids=_ids(RECORDS))
def test_protobuf_every_field(entry: dict[str, Any]) -> None:
    record = decode_protobuf((FIXTURES / entry["protobuf_file"]).read_bytes())
    got = _builtins(record)
    assert got.pop("TimeZone") == entry["timestamp_zone"]
    assert_same(got, expected_protobuf(entry), "")
    assert record.timestamp_ns == entry["timestamp_unix_ns"]
    assert record.expire_at_ns == entry["expire_at_unix_ns"]


@pytest.mark.parametrize("entry", RECORDS, ids=_ids(RECORDS))
def test_firehose_record(entry: dict[str, Any]) -> None:
    """JSON names and values as Tyk's own JSON view, keys digested, times as int ns."""
    digester = KeyDigester(b"salt")
    record = FirehoseConverter(digester).convert(
        decode_msgpack((FIXTURES / entry["msgpack_file"]).read_bytes())
    )
    view = entry["record"]
    dropped = {"raw_request", "raw_response", "api_schema", "graphql_stats", "mcp_stats"}
    assert set(record) == set(view) - dropped
    for name in set(view) - dropped - {"api_key", "timestamp", "expireAt", "tags", "geo"}:
        assert record[name] == view[name], name
    assert record["geo"]["city"]["names"] == (view["geo"]["city"]["names"] or {})
    assert record["geo"]["location"] == view["geo"]["location"]
    assert record["geo"]["country"] == view["geo"]["country"]
    raw_key = view["api_key"]
    assert record["api_key"] == (digester.digest(raw_key) if raw_key else "")
    assert raw_key == "" or raw_key not in str(record)  # the raw key is gone, tags included
    expected_tags = [
        "key-" + digester.digest(t[4:]) if t.startswith("key-") else t for t in view["tags"] or []
    ]
    assert record["tags"] == expected_tags
    ts = entry["timestamp_unix_ns"]
    assert record["timestamp"] == (ts if -(2**63) <= ts < 2**63 else "0001-01-01T00:00:00Z")


def test_firehose_records_pass_the_worker_decoder() -> None:
    converter = FirehoseConverter(KeyDigester())
    records = [
        converter.convert(decode_msgpack((FIXTURES / e["msgpack_file"]).read_bytes())) for e in RECORDS
    ]
    decoded = MessageDecoder().decode(message(TOPIC_ANALYTICS, records))
    assert isinstance(decoded, DecodedMessage)
    assert not decoded.rejected
    by_name = dict(zip([e["name"] for e in RECORDS], analytics_rows(decoded.records), strict=True))
    assert by_name["rate_limited_429"].response_code == 429
    assert by_name["all_fields"].latency_ms == 187
    assert by_name["all_fields"].timestamp_ns == 1709644029123456789


def test_firehose_time_forms() -> None:
    assert firehose_time((1, 5)) == 1_000_000_005
    assert firehose_time((-1, 500_000_000)) == -500_000_000
    assert firehose_time((-62_135_596_800, 0)) == "0001-01-01T00:00:00Z"
    assert firehose_time((-62_135_596_800, 120_000_000)) == "0001-01-01T00:00:00.12Z"
    assert firehose_time((10_000_000_000, 0)) == "2286-11-20T17:46:40Z"  # past int64 nanoseconds
    with pytest.raises(TykDecodeError):
        firehose_time((2**62, 0))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "data",
    [b"", b"\x91\x01", b"\xc1", b"\x81\xa6Method\x05", b"\x81\xa3Day\xa1x", b"\xa5hello"],
)
def test_msgpack_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(TykDecodeError):
        decode_msgpack(data)


def test_protobuf_truncations_are_decode_errors_or_prefixes() -> None:
    """Cutting a record anywhere never raises anything but TykDecodeError."""
    data = (FIXTURES / RECORDS[0]["protobuf_file"]).read_bytes()
    errors = 0
    for cut in range(len(data)):
        try:
            decode_protobuf(data[:cut])
        except TykDecodeError:
            errors += 1
    assert errors > len(data) // 4


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x0a\x05ab", "length past the end"),
        (b"\x08" + b"\xff" * 11, "varint too long"),
        (b"\x0a\x02\xff\xfe", "invalid UTF-8 string"),
        (b"\x08\x01", "Host (string) sent as a varint"),
        (b"\x0b", "group wire type"),
        (b"\x00\x01", "field number 0"),
        (b"\x28" + b"\xff" * 9 + b"\x7f", "ContentLength (int64) a 70-bit varint"),
        (b"\x28" + b"\xff" * 9 + b"\x02", "ContentLength (int64) a 65-bit varint"),
        (b"\x58\x80\x80\x80\x80\x10", "ResponseCode (int32) 2**32"),
        (b"\x58\x80\x80\x80\x80\x08", "ResponseCode (int32) 2**31"),
        (b"\xba\x01\x08\x12\x06\x10\x80\x80\x80\x80\x10", "Geo.City.GeoNameID (uint32) 2**32"),
    ],
)
def test_protobuf_malformed(data: bytes, why: str) -> None:
    with pytest.raises(TykDecodeError):
        decode_protobuf(data)


def test_protobuf_integer_fields_take_their_whole_range() -> None:
    int64_min = b"\x28" + b"\x80" * 9 + b"\x01"  # ContentLength = -2**63: ten bytes, 64 bits
    int32_min = b"\x58" + b"\x80\x80\x80\x80\xf8\xff\xff\xff\xff\x01"  # ResponseCode = -2**31
    rec = decode_protobuf(int64_min + int32_min)
    assert (rec.content_length, rec.response_code) == (-(2**63), -(2**31))


@pytest.mark.parametrize(
    ("field", "value"), [("ContentLength", 2**63), ("ResponseCode", 2**64 - 1), ("GeoNameID", -1)]
)
def test_msgpack_integers_outside_go_types_are_decode_errors(field: str, value: int) -> None:
    record: dict[str, Any] = {field: value}
    if field == "GeoNameID":
        record = {"Geo": {"City": record}}
    with pytest.raises(TykDecodeError):
        decode_msgpack(msgspec.msgpack.encode(record))


@pytest.mark.parametrize(
    "graphql",
    [
        {"Errors": [{"Message": "m", "Path": "\x00bomb"}]},  # a path is Any: maps built as dicts
        {"Errors": "\x00bomb"},  # each map a TykGraphError
    ],
)
def test_a_msgpack_element_of_more_maps_than_a_record_holds_is_refused_unbuilt(
    graphql: dict[str, Any],
) -> None:
    maps = 1 << 20
    element = msgspec.msgpack.encode({"APIID": "a", "OrgID": "o", "GraphQLStats": graphql})
    element = element.replace(
        msgspec.msgpack.encode("\x00bomb"), b"\xdd" + maps.to_bytes(4, "big") + b"\x80" * maps
    )
    tracemalloc.start()
    try:
        with pytest.raises(TykDecodeError, match="maps and lists"):
            decode_msgpack(element)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


EMPTY_TAG = protobuf_field(25, 2, b"")  # tags: an empty string, three bytes, a tuple and a str
UNKNOWN = protobuf_field(99, 0, b"\x00")  # a varint field no reader knows
# GraphQL stats (32) of type entries (2), each a key (1) and 1,000 empty field names (2 of 1s):
# every nested message within its own share, the element far beyond
EMPTY_NAME = protobuf_field(1, 2, b"")
DENSE_TYPES = protobuf_field(
    32, 2, protobuf_field(2, 2, EMPTY_NAME + protobuf_field(2, 2, EMPTY_NAME * 1_000)) * 60
)


@pytest.mark.parametrize(
    "tail", [EMPTY_TAG * 70_000, UNKNOWN * 70_000, DENSE_TYPES], ids=["tags", "unknown", "nested"]
)
def test_a_protobuf_element_of_more_fields_than_a_record_holds_is_refused(tail: bytes) -> None:
    """A field can take two bytes and costs a tuple and its value: 16 MiB of empty tags built
    1.1 GB. Past one field per 16 bytes (and 1,024), nested messages included, it is refused."""
    data = (FIXTURES / RECORDS[1]["protobuf_file"]).read_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(TykDecodeError, match="more fields than"):
            decode_protobuf(data + tail)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * len(tail)  # ~60x before, ~11x at the bound
    assert decode_protobuf(data + EMPTY_TAG * 100).tags == [*(decode_protobuf(data).tags or []), *[""] * 100]


def test_protobuf_unknown_fields_are_skipped() -> None:
    data = (FIXTURES / RECORDS[1]["protobuf_file"]).read_bytes()
    extra = b"\xb8\x06\x07" + b"\xc2\x06\x03abc" + b"\xc9\x06" + b"\x00" * 8  # fields 103, 104, 105
    assert decode_protobuf(data + extra) == decode_protobuf(data)


# ----------------------------------------------------------------------------- vs generated code

_text = st.text(max_size=12)
_i64 = st.integers(-(2**63), 2**63 - 1)
_i32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def _pb_records(draw: st.DrawFn) -> Any:
    m = pb2.AnalyticsRecord()
    for name in ("Host", "Method", "Path", "RawPath", "UserAgent", "APIKey", "APIVersion", "APIName"):
        setattr(m, name, draw(_text))
    for name in ("APIID", "OrgID", "RawRequest", "RawResponse", "IPAddress", "Alias", "OauthID"):
        setattr(m, name, draw(_text))
    for name in ("TimeZone", "ApiSchema", "OriginalPath", "ListenPath"):
        setattr(m, name, draw(_text))
    m.ContentLength, m.RequestTime = draw(_i64), draw(_i64)
    m.Day, m.Month, m.Year, m.Hour, m.ResponseCode = (draw(_i32) for _ in range(5))
    m.TrackPath = draw(st.booleans())
    m.Tags.extend(draw(st.lists(_text, max_size=4)))
    for ts in (m.TimeStamp, m.ExpireAt):
        if draw(st.booleans()):
            ts.seconds = draw(st.integers(-62135596800, 253402300799))
            ts.nanos = draw(st.integers(0, 999999999))
    if draw(st.booleans()):
        m.Latency.Total, m.Latency.Upstream = draw(_i64), draw(_i64)
    if draw(st.booleans()):
        n = m.Network
        n.OpenConnections, n.ClosedConnections, n.BytesIn, n.BytesOut = (draw(_i64) for _ in range(4))
    if draw(st.booleans()):
        m.Geo.Country.ISOCode = draw(_text)
        m.Geo.City.GeoNameID = draw(st.integers(0, 2**32 - 1))
        m.Geo.City.Names.update(draw(st.dictionaries(_text, _text, max_size=3)))
        m.Geo.Location.Latitude = draw(st.floats(allow_nan=False))
        m.Geo.Location.Longitude = draw(st.floats(allow_nan=False))
        m.Geo.Location.TimeZone = draw(_text)
    if draw(st.booleans()):
        g = m.GraphQLStats
        g.IsGraphQL, g.HasError = draw(st.booleans()), draw(st.booleans())
        g.OperationType = draw(st.integers(0, 3))
        g.Variables = draw(_text)
        g.RootFields.extend(draw(st.lists(_text, max_size=3)))
        g.GraphErrors.extend(draw(st.lists(_text, max_size=3)))
        for key, fields in draw(st.dictionaries(_text, st.lists(_text, max_size=3), max_size=3)).items():
            g.Types[key].fields.extend(fields)
    if draw(st.booleans()):
        c = m.MCPStats
        c.IsMCP = draw(st.booleans())
        c.JSONRPCMethod, c.PrimitiveType, c.PrimitiveName = draw(_text), draw(_text), draw(_text)
    return m


def _from_pb2(m: Any) -> dict[str, Any]:
    """What the generated code reads, in the decoder's Go-named view."""
    g, c, geo = m.GraphQLStats, m.MCPStats, m.Geo
    same = ["Method", "Host", "Path", "RawPath", "ContentLength", "UserAgent", "Day", "Month", "Year"]
    same += ["Hour", "ResponseCode", "APIKey", "APIVersion", "APIName", "APIID", "OrgID", "OauthID"]
    same += ["RequestTime", "RawRequest", "RawResponse", "IPAddress", "Alias", "TrackPath", "ApiSchema"]
    same += ["OriginalPath", "ListenPath", "TimeZone"]
    out: dict[str, Any] = {name: getattr(m, name) for name in same}
    out |= {
        "TimeStamp": [m.TimeStamp.seconds, m.TimeStamp.nanos],
        "ExpireAt": [m.ExpireAt.seconds, m.ExpireAt.nanos],
        "Latency": {"Total": m.Latency.Total, "Upstream": m.Latency.Upstream, "Gateway": 0},
        "Network": {
            "OpenConnections": m.Network.OpenConnections,
            "ClosedConnection": m.Network.ClosedConnections,
            "BytesIn": m.Network.BytesIn,
            "BytesOut": m.Network.BytesOut,
        },
        "Geo": {
            "Country": {"ISOCode": geo.Country.ISOCode},
            "City": {"GeoNameID": geo.City.GeoNameID, "Names": dict(geo.City.Names) or None},
            "Location": {
                "Latitude": geo.Location.Latitude,
                "Longitude": geo.Location.Longitude,
                "TimeZone": geo.Location.TimeZone,
            },
        },
        "Tags": list(m.Tags) or None,
        "GraphQLStats": {
            "Variables": g.Variables,
            "RootFields": list(g.RootFields) or None,
            "Types": {k: list(v.fields) for k, v in g.Types.items()} or None,
            "Errors": [{"Message": e, "Path": None} for e in g.GraphErrors] or None,
            "OperationType": int(g.OperationType),
            "HasErrors": g.HasError,
            "IsGraphQL": g.IsGraphQL,
        },
        "MCPStats": {
            "IsMCP": c.IsMCP,
            "JSONRPCMethod": c.JSONRPCMethod,
            "PrimitiveType": c.PrimitiveType,
            "PrimitiveName": c.PrimitiveName,
        },
        "CollectionName": "",
    }
    return out


@settings(max_examples=300, deadline=None)
@given(_pb_records())
def test_protobuf_reader_agrees_with_generated_code(m: Any) -> None:
    got = _builtins(decode_protobuf(m.SerializeToString()))
    assert got == _from_pb2(m)
