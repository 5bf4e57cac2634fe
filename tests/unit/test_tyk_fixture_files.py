"""Documents Tyk's analytics wire formats against fixtures made by Tyk Pump's own encoder.

The fixtures (tests/fixtures/tyk, see its README) were produced by a Go program that calls
tyk-pump's ``serializer`` package, i.e. exactly the bytes a gateway RPUSHes for each record.
``analytics/manifest.json`` holds, per record, the Go ``encoding/json`` view of the record
(json tags), the instants as integers, and the key order of every msgpack map.

These tests pin the format with plain ``msgpack`` and generated protobuf code; they are the
reference the production decoder must agree with.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
from google.protobuf import descriptor_pb2, unknown_fields  # type: ignore[import-untyped]  # no type hints

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tyk"
MANIFEST = json.loads((FIXTURES / "analytics" / "manifest.json").read_text(encoding="utf-8"))
RECORDS: list[dict[str, Any]] = MANIFEST["records"]
NOTIFICATIONS = json.loads((FIXTURES / "notifications.json").read_text(encoding="utf-8"))

NS = 10**9

# Go field name (= msgpack key) -> json tag, in struct declaration order (= msgpack key order).
GO_TO_JSON: dict[str, str | None] = {
    "Method": "method",
    "Host": "host",
    "Path": "path",
    "RawPath": "raw_path",
    "ContentLength": "content_length",
    "UserAgent": "user_agent",
    "Day": "day",
    "Month": "month",
    "Year": "year",
    "Hour": "hour",
    "ResponseCode": "response_code",
    "APIKey": "api_key",
    "TimeStamp": "timestamp",
    "APIVersion": "api_version",
    "APIName": "api_name",
    "APIID": "api_id",
    "OrgID": "org_id",
    "OauthID": "oauth_id",
    "RequestTime": "request_time",
    "RawRequest": "raw_request",
    "RawResponse": "raw_response",
    "IPAddress": "ip_address",
    "Geo": "geo",
    "Network": "network",
    "Latency": "latency",
    "Tags": "tags",
    "Alias": "alias",
    "TrackPath": "track_path",
    "ExpireAt": "expireAt",
    "ApiSchema": "api_schema",
    "OriginalPath": "original_path",
    "ListenPath": "listen_path",
    "GraphQLStats": "graphql_stats",
    "MCPStats": "mcp_stats",
    "CollectionName": None,  # json:"-" but still written by msgpack
}

# Scalars that keep the same name and meaning in the .proto.
PROTO_SAME_SCALARS = [
    "Host",
    "Method",
    "Path",
    "RawPath",
    "ContentLength",
    "UserAgent",
    "Day",
    "Month",
    "Year",
    "Hour",
    "ResponseCode",
    "APIKey",
    "APIVersion",
    "APIName",
    "APIID",
    "OrgID",
    "RequestTime",
    "RawRequest",
    "RawResponse",
    "IPAddress",
    "Alias",
    "TrackPath",
    "OauthID",
    "ApiSchema",
    "OriginalPath",
    "ListenPath",
]

FLOAT_KEYS = {"Latitude", "Longitude"}


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{e['index']:03d}-{e['name']}" for e in entries]


def _sec_nsec(unix_ns: int) -> list[int]:
    # Go's Unix()/Nanosecond(): seconds floored, nanoseconds in [0, 1e9) -> Python divmod.
    sec, nsec = divmod(unix_ns, NS)
    return [sec, nsec]


def expected_msgpack(entry: dict[str, Any]) -> dict[str, Any]:
    """What msgpack.unpackb(raw=False) must return, derived from the manifest's JSON view."""
    rec = entry["record"]
    geo, net, lat = rec["geo"], rec["network"], rec["latency"]
    gql, mcp = rec["graphql_stats"], rec["mcp_stats"]
    out: dict[str, Any] = {}
    for go, js in GO_TO_JSON.items():
        if go == "TimeStamp":
            out[go] = _sec_nsec(entry["timestamp_unix_ns"])
        elif go == "ExpireAt":
            out[go] = _sec_nsec(entry["expire_at_unix_ns"])
        elif go == "Geo":
            out[go] = {
                "Country": {"ISOCode": geo["country"]["iso_code"]},
                "City": {"GeoNameID": geo["city"]["geoname_id"], "Names": geo["city"]["names"]},
                "Location": {
                    "Latitude": geo["location"]["latitude"],
                    "Longitude": geo["location"]["longitude"],
                    "TimeZone": geo["location"]["time_zone"],
                },
            }
        elif go == "Network":
            out[go] = {
                "OpenConnections": net["open_connections"],
                "ClosedConnection": net["closed_connections"],  # singular in Go / msgpack
                "BytesIn": net["bytes_in"],
                "BytesOut": net["bytes_out"],
            }
        elif go == "Latency":
            out[go] = {"Total": lat["total"], "Upstream": lat["upstream"], "Gateway": lat["gateway"]}
        elif go == "GraphQLStats":
            errors = gql["Errors"]
            out[go] = {
                "Variables": gql["Variables"],
                "RootFields": gql["RootFields"],
                "Types": gql["Types"],
                "Errors": None
                if errors is None
                else [{"Message": e["message"], "Path": e["path"]} for e in errors],
                "OperationType": gql["OperationType"],
                "HasErrors": gql["HasErrors"],
                "IsGraphQL": gql["IsGraphQL"],
            }
        elif go == "MCPStats":
            out[go] = {
                "IsMCP": mcp["is_mcp"],
                "JSONRPCMethod": mcp["jsonrpc_method"],
                "PrimitiveType": mcp["primitive_type"],
                "PrimitiveName": mcp["primitive_name"],
            }
        elif go == "CollectionName":
            out[go] = entry["collection_name"]
        else:
            assert js is not None
            out[go] = rec[js]
    return out


def assert_same(actual: Any, expected: Any, path: str) -> None:
    """Deep equality that also checks types (True != 1, None != [], int vs float)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected map, got {actual!r}"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for k, v in expected.items():
            assert_same(actual[k], v, f"{path}.{k}" if path else k)
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected array, got {actual!r}"
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}.{i}")
    elif path.rsplit(".", 1)[-1] in FLOAT_KEYS:
        assert type(actual) is float, f"{path}: float64 expected, got {actual!r}"
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    else:
        assert type(actual) is type(expected), f"{path}: {actual!r} ({type(actual).__name__}) != {expected!r}"
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


_GO_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def _parse_go_time(text: str) -> tuple[datetime, int, int]:
    """Go RFC3339Nano -> (naive wall-clock time, nanoseconds, UTC offset in seconds)."""
    m = _GO_TIME.match(text)
    assert m, text
    y, mo, d, h, mi, s, frac, zone = m.groups()
    wall = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s))
    nanos = int((frac or "").ljust(9, "0"))
    offset = (
        0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    )
    return wall, nanos, offset


def _load_pb2() -> ModuleType:
    path = FIXTURES / "proto" / "analytics_pb2.py"
    spec = importlib.util.spec_from_file_location("tyk_fixture_analytics_pb2", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pb2 = _load_pb2()


# ----------------------------------------------------------------------------- manifest


def test_manifest_provenance() -> None:
    assert MANIFEST["tyk_pump_module"] == "github.com/TykTechnologies/tyk-pump"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", MANIFEST["tyk_pump_version"])
    assert MANIFEST["msgpack_module"] == "gopkg.in/vmihailenco/msgpack.v2"
    assert MANIFEST["redis_key_msgpack"] == "analytics-tyk-system-analytics"
    assert MANIFEST["redis_key_protobuf"] == "analytics-tyk-system-analytics_protobuf"
    names = {e["name"] for e in RECORDS}
    for required in (
        "all_fields",
        "rate_limited_429",
        "quota_403_empty_tags",
        "tcp_network",
        "graphql_mutation",
        "mcp_tool_call",
        "unicode",
        "zero_timestamp",
    ):
        assert required in names
    assert [e["index"] for e in RECORDS] == list(range(len(RECORDS)))


@pytest.mark.parametrize("entry", RECORDS, ids=_ids(RECORDS))
def test_manifest_time_fields_are_consistent(entry: dict[str, Any]) -> None:
    """TimeStamp is an instant; Day/Month/Year/Hour are the wall clock in the gateway's zone."""
    rec = entry["record"]
    wall, nanos, offset = _parse_go_time(rec["timestamp"])
    assert offset == entry["timestamp_utc_offset_seconds"]
    sec, nsec = _sec_nsec(entry["timestamp_unix_ns"])
    assert nsec == nanos
    epoch = datetime(1970, 1, 1)
    assert (wall - timedelta(seconds=offset) - epoch) == timedelta(seconds=sec)
    if entry["timestamp_unix_ns"] != -62135596800 * NS:  # Go zero time: Day/Month/Year/Hour stay 0
        assert (rec["year"], rec["month"], rec["day"], rec["hour"]) == (
            wall.year,
            wall.month,
            wall.day,
            wall.hour,
        )
    else:
        assert rec["timestamp"] == "0001-01-01T00:00:00Z"
        assert (rec["year"], rec["month"], rec["day"], rec["hour"]) == (0, 0, 0, 0)
    exp_wall, exp_nanos, exp_offset = _parse_go_time(rec["expireAt"])
    exp_sec, exp_nsec = _sec_nsec(entry["expire_at_unix_ns"])
    assert exp_nsec == exp_nanos
    assert (exp_wall - timedelta(seconds=exp_offset) - epoch) == timedelta(seconds=exp_sec)


# ----------------------------------------------------------------------------- msgpack


@pytest.mark.parametrize("entry", RECORDS, ids=_ids(RECORDS))
def test_msgpack_record(entry: dict[str, Any]) -> None:
    data = (FIXTURES / entry["msgpack_file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["msgpack_sha256"]

    obj = msgpack.unpackb(data, raw=False)

    # A map keyed by Go field names, in struct order, CollectionName included.
    assert list(obj) == list(GO_TO_JSON)
    assert entry["msgpack_map_keys"][""] == list(GO_TO_JSON)
    # Every map (structs and Go maps) has exactly the keys, in wire order, the generator saw.
    for path, keys in entry["msgpack_map_keys"].items():
        assert list(_get_path(obj, path)) == keys, path

    # Times are a plain 2-element array [unix_seconds, nanoseconds], not the msgpack timestamp ext.
    assert b"\xa9TimeStamp\x92" in data
    assert b"\xa8ExpireAt\x92" in data
    assert obj["TimeStamp"] == _sec_nsec(entry["timestamp_unix_ns"])
    assert obj["ExpireAt"] == _sec_nsec(entry["expire_at_unix_ns"])

    # Every field, with types.
    expected = expected_msgpack(entry)
    for key, value in expected.items():
        assert_same(obj[key], value, key)


def test_msgpack_edge_cases_on_the_wire() -> None:
    by_name = {
        e["name"]: msgpack.unpackb((FIXTURES / e["msgpack_file"]).read_bytes(), raw=False) for e in RECORDS
    }
    assert by_name["rate_limited_429"]["Tags"] is None  # nil slice -> msgpack nil
    assert by_name["quota_403_empty_tags"]["Tags"] == []  # empty slice -> empty array
    assert by_name["rate_limited_429"]["ContentLength"] == -1
    assert by_name["http_success_typical"]["Geo"]["City"]["Names"] is None  # no GeoIP -> nil map
    assert by_name["tcp_network"]["ResponseCode"] == -1
    assert by_name["tcp_network"]["Network"]["BytesOut"] == 5_000_000_000
    assert by_name["zero_timestamp"]["TimeStamp"] == [-62135596800, 0]
    assert by_name["pre_epoch_timestamp"]["TimeStamp"] == [-1, 500_000_000]
    assert by_name["pre_epoch_timestamp"]["ExpireAt"] == [0, 0]
    assert by_name["all_fields"]["CollectionName"] != ""
    assert by_name["http_success_typical"]["CollectionName"] == ""
    assert by_name["graphql_mutation"]["GraphQLStats"]["Errors"][0]["Path"] == ["updateUser", 0, "name"]
    assert by_name["graphql_mutation"]["GraphQLStats"]["Errors"][1]["Path"] is None
    assert by_name["mcp_tool_call"]["MCPStats"]["IsMCP"] is True
    assert by_name["unicode"]["Path"] == "/café/日本語/🚀"
    assert len(by_name["unicode"]["UserAgent"].encode()) > 255  # str16 on the wire


# ----------------------------------------------------------------------------- protobuf


def test_pb2_matches_descriptor_compiled_into_pump() -> None:
    """The committed .proto/_pb2 must describe what the Go code actually encodes."""
    go = descriptor_pb2.FileDescriptorProto.FromString(
        (FIXTURES / "proto" / "analytics_go_descriptor.binpb").read_bytes()
    )
    py = descriptor_pb2.FileDescriptorProto()
    pb2.DESCRIPTOR.CopyToProto(py)
    assert py.package == go.package == "normalproto"

    def shape(fdp: descriptor_pb2.FileDescriptorProto) -> Any:
        def msg(m: descriptor_pb2.DescriptorProto) -> Any:
            return (
                m.name,
                sorted((f.name, f.number, f.type, f.label, f.type_name) for f in m.field),
                sorted(msg(n) for n in m.nested_type),
                m.options.map_entry,
            )

        enums = sorted((e.name, sorted((v.name, v.number) for v in e.value)) for e in fdp.enum_type)
        return sorted(msg(m) for m in fdp.message_type), enums, list(fdp.dependency)

    assert shape(py) == shape(go)
    text = (FIXTURES / "proto" / "analytics.proto").read_text(encoding="utf-8")
    assert "package normalproto;" in text
    assert "Mozilla Public License" in (FIXTURES / "proto" / "LICENSE-MPL-2.0.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("entry", RECORDS, ids=_ids(RECORDS))
def test_protobuf_record(entry: dict[str, Any]) -> None:
    data = (FIXTURES / entry["protobuf_file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["protobuf_sha256"]

    msg = pb2.AnalyticsRecord.FromString(data)
    assert len(unknown_fields.UnknownFieldSet(msg)) == 0
    assert msg.ByteSize() == len(data)
    exp = expected_msgpack(entry)  # Go-named view; protobuf differences spelled out below

    for name in PROTO_SAME_SCALARS:
        assert getattr(msg, name) == exp[name], name

    # Times: google.protobuf.Timestamp (UTC instant) + the Go zone name in TimeZone (field 30).
    assert msg.HasField("TimeStamp")
    assert msg.HasField("ExpireAt")
    assert [msg.TimeStamp.seconds, msg.TimeStamp.nanos] == exp["TimeStamp"]
    assert [msg.ExpireAt.seconds, msg.ExpireAt.nanos] == exp["ExpireAt"]
    assert msg.TimeZone == entry["timestamp_zone"]

    # Latency: no Gateway field in the .proto -> lost with protobuf.
    assert "Gateway" not in pb2.Latency.DESCRIPTOR.fields_by_name
    assert (msg.Latency.Total, msg.Latency.Upstream) == (exp["Latency"]["Total"], exp["Latency"]["Upstream"])

    # NetworkStats: ClosedConnections (plural) in proto, ClosedConnection in Go/msgpack.
    net = exp["Network"]
    assert msg.HasField("Network")
    assert (
        msg.Network.OpenConnections,
        msg.Network.ClosedConnections,
        msg.Network.BytesIn,
        msg.Network.BytesOut,
    ) == (
        net["OpenConnections"],
        net["ClosedConnection"],
        net["BytesIn"],
        net["BytesOut"],
    )

    # Geo is always present; City.Names is on the wire (the pump's own decoder drops it).
    geo = exp["Geo"]
    assert msg.HasField("Geo")
    assert msg.Geo.Country.ISOCode == geo["Country"]["ISOCode"]
    assert msg.Geo.City.GeoNameID == geo["City"]["GeoNameID"]
    assert dict(msg.Geo.City.Names) == (geo["City"]["Names"] or {})
    assert msg.Geo.Location.Latitude == geo["Location"]["Latitude"]
    assert msg.Geo.Location.Longitude == geo["Location"]["Longitude"]
    assert msg.Geo.Location.TimeZone == geo["Location"]["TimeZone"]

    # Tags: nil and [] are indistinguishable.
    assert list(msg.Tags) == (exp["Tags"] or [])

    # GraphQLStats only when IsGraphQL; errors flattened to messages; HasErrors -> HasError.
    gql = exp["GraphQLStats"]
    assert msg.HasField("GraphQLStats") == gql["IsGraphQL"]
    if gql["IsGraphQL"]:
        g = msg.GraphQLStats
        assert g.IsGraphQL is True
        assert g.Variables == gql["Variables"]
        assert list(g.RootFields) == (gql["RootFields"] or [])
        assert g.HasError == gql["HasErrors"]
        assert int(g.OperationType) == gql["OperationType"]  # enum numbers = Go iota values
        assert list(g.GraphErrors) == [e["Message"] for e in gql["Errors"] or []]
        assert {k: list(v.fields) for k, v in g.Types.items()} == (gql["Types"] or {})

    # MCPStats only when IsMCP.
    mcp = exp["MCPStats"]
    assert msg.HasField("MCPStats") == mcp["IsMCP"]
    if mcp["IsMCP"]:
        assert (
            msg.MCPStats.IsMCP,
            msg.MCPStats.JSONRPCMethod,
            msg.MCPStats.PrimitiveType,
            msg.MCPStats.PrimitiveName,
        ) == (
            True,
            mcp["JSONRPCMethod"],
            mcp["PrimitiveType"],
            mcp["PrimitiveName"],
        )

    # Nothing else is in the message (CollectionName has no proto field).
    covered = {
        *PROTO_SAME_SCALARS,
        "TimeStamp",
        "ExpireAt",
        "TimeZone",
        "Latency",
        "Network",
        "Geo",
        "Tags",
        "GraphQLStats",
        "MCPStats",
    }
    assert covered == set(pb2.AnalyticsRecord.DESCRIPTOR.fields_by_name)


# ----------------------------------------------------------------------------- notifications

_DIGEST_INFO_SHA256 = bytes.fromhex("3031300d060960864801650304020105000420")


def _rsa_pkcs1v15_sha256_ok(payload: str, signature_b64: str, n: int, e: int) -> bool:
    k = (n.bit_length() + 7) // 8
    sig = base64.b64decode(signature_b64, validate=True)
    if len(sig) != k:
        return False
    em = pow(int.from_bytes(sig, "big"), e, n).to_bytes(k, "big")
    t = _DIGEST_INFO_SHA256 + hashlib.sha256(payload.encode()).digest()
    return em == b"\x00\x01" + b"\xff" * (k - 3 - len(t)) + b"\x00" + t


@pytest.mark.parametrize(
    "note", NOTIFICATIONS["messages"], ids=[m["name"] for m in NOTIFICATIONS["messages"]]
)
def test_notification_signature(note: dict[str, Any]) -> None:
    wire = json.loads(note["wire"])
    assert wire == note["decoded"]
    assert list(wire) == ["command", "payload", "signature", "algorithm"]
    assert type(wire["algorithm"]) is int
    secret = NOTIFICATIONS["node_secret"]
    if note["scheme"] == "sha256":
        assert wire["algorithm"] == 5
        assert re.fullmatch(r"[0-9a-f]{64}", wire["signature"])
        digest = hashlib.sha256((wire["command"] + wire["payload"] + secret).encode()).hexdigest()
        assert (digest == wire["signature"]) is note["valid"]
    else:
        assert wire["algorithm"] == 0
        key = NOTIFICATIONS["rsa_public_key"]
        ok = _rsa_pkcs1v15_sha256_ok(wire["payload"], wire["signature"], int(key["n_hex"], 16), key["e"])
        assert ok is note["valid"]


def test_notification_set_and_test_key() -> None:
    msgs = NOTIFICATIONS["messages"]
    assert NOTIFICATIONS["channel"] == "tyk.cluster.notifications"
    valid_sha = {m["decoded"]["command"] for m in msgs if m["scheme"] == "sha256" and m["valid"]}
    assert {"ApiUpdated", "PolicyChanged", "GroupReload", "KeySpaceUpdateNotification"} <= valid_sha
    assert any(not m["valid"] for m in msgs if m["scheme"] == "sha256")
    assert any(m["valid"] for m in msgs if m["scheme"] == "rsa")
    # Go's encoding/json escapes <, >, & in the wire text; the signature is over the raw string.
    html = next(m for m in msgs if m["name"] == "api_added_html_unicode")
    assert "\\u003c" in html["wire"]
    assert "<" in html["decoded"]["payload"]
    # The PEM is the throwaway test key whose modulus is listed in the JSON.
    pem = (FIXTURES / NOTIFICATIONS["rsa_public_key_file"]).read_text(encoding="ascii")
    assert "TEST_ONLY" in NOTIFICATIONS["rsa_public_key_file"]
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    assert int(NOTIFICATIONS["rsa_public_key"]["n_hex"], 16).to_bytes(256, "big") in der
    assert (FIXTURES / NOTIFICATIONS["rsa_private_key_file"]).is_file()


def test_zero_time_is_year_one() -> None:
    sec, nsec = _sec_nsec(-62135596800 * NS)
    assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=sec, microseconds=nsec // 1000) == datetime(
        1, 1, 1, tzinfo=UTC
    )
