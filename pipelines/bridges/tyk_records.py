"""Tyk's AnalyticsRecord as the gateway writes it to Redis, and its firehose form.

A gateway RPUSHes one element per request to `analytics-tyk-system-analytics`
(and the `_0`..`_9` / `_protobuf` variants). An msgpack element is a map keyed by
the *Go field names* (`APIKey`, `TimeStamp`, ...), times as `[unix_sec, nsec]`,
`CollectionName` included although JSON omits it; the nested Latency, Network
(`ClosedConnection`, singular), Geo, GraphQLStats and MCPStats are maps too.
`TykAnalyticsRecord` decodes that map with every field (tests check each one
against the fixtures Tyk Pump's own encoder wrote); missing fields take Go's
zero value, so records of older gateways decode too. The protobuf variant
decodes into the same struct (pipelines.bridges.tyk_protobuf).

`to_firehose()` turns a decoded record into the firehose's `tyk.analytics`
record: Tyk's JSON field names, times as int unix nanoseconds. It forwards what
docs/protocol.md lists and leaves out `raw_request`, `raw_response`,
`api_schema`, `graphql_stats` and `mcp_stats` (large, and the raw request
carries the caller's credentials). `api_key` and the `key-<api_key>` tag are
replaced by the bridge's key digest (pipelines.bridges.key_digest).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import msgspec

from pipelines.bridges.int_ranges import Int64, UInt64
from pipelines.bridges.key_digest import KeyDigester
from pipelines.containers import container_limit, msgpack_buildable
from pipelines.errors import DECODE_ERRORS, TykDecodeError

NS: Final = 1_000_000_000
GO_ZERO_TIME: Final = (-62_135_596_800, 0)  # Go's time.Time{}: 0001-01-01T00:00:00Z
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_KEY_TAG: Final = "key-"

# Go time.Time in msgpack v2: a 2-element array [unix seconds, nanoseconds].
GoTime = tuple[Int64, Int64]


def _go(name: str, default: Any) -> Any:
    return msgspec.field(default=default, name=name)


class TykLatency(msgspec.Struct):
    total: Int64 = _go("Total", 0)
    upstream: Int64 = _go("Upstream", 0)
    gateway: Int64 = _go("Gateway", 0)  # not in the .proto: 0 for protobuf records


class TykNetworkStats(msgspec.Struct):
    open_connections: Int64 = _go("OpenConnections", 0)
    closed_connections: Int64 = _go("ClosedConnection", 0)  # singular in Go and msgpack
    bytes_in: Int64 = _go("BytesIn", 0)
    bytes_out: Int64 = _go("BytesOut", 0)


class TykCountry(msgspec.Struct):
    iso_code: str = _go("ISOCode", "")


class TykCity(msgspec.Struct):
    geoname_id: UInt64 = _go("GeoNameID", 0)
    names: dict[str, str] | None = _go("Names", None)


class TykLocation(msgspec.Struct):
    latitude: float = _go("Latitude", 0.0)
    longitude: float = _go("Longitude", 0.0)
    time_zone: str = _go("TimeZone", "")


class TykGeo(msgspec.Struct):
    country: TykCountry = msgspec.field(default_factory=TykCountry, name="Country")
    city: TykCity = msgspec.field(default_factory=TykCity, name="City")
    location: TykLocation = msgspec.field(default_factory=TykLocation, name="Location")


class TykGraphError(msgspec.Struct):
    message: str = _go("Message", "")
    path: list[Any] | None = _go("Path", None)


class TykGraphQLStats(msgspec.Struct):
    variables: str = _go("Variables", "")
    root_fields: list[str] | None = _go("RootFields", None)
    types: dict[str, list[str]] | None = _go("Types", None)
    errors: list[TykGraphError] | None = _go("Errors", None)
    operation_type: Int64 = _go("OperationType", 0)
    has_errors: bool = _go("HasErrors", False)
    is_graphql: bool = _go("IsGraphQL", False)


class TykMCPStats(msgspec.Struct):
    is_mcp: bool = _go("IsMCP", False)
    jsonrpc_method: str = _go("JSONRPCMethod", "")
    primitive_type: str = _go("PrimitiveType", "")
    primitive_name: str = _go("PrimitiveName", "")


class TykAnalyticsRecord(msgspec.Struct, kw_only=True):
    """Every field of Tyk's AnalyticsRecord, named as Python, keyed on the wire by Go name."""

    method: str = _go("Method", "")
    host: str = _go("Host", "")
    path: str = _go("Path", "")
    raw_path: str = _go("RawPath", "")
    content_length: Int64 = _go("ContentLength", 0)
    user_agent: str = _go("UserAgent", "")
    day: Int64 = _go("Day", 0)
    month: Int64 = _go("Month", 0)
    year: Int64 = _go("Year", 0)
    hour: Int64 = _go("Hour", 0)
    response_code: Int64 = _go("ResponseCode", 0)
    api_key: str = _go("APIKey", "")
    timestamp: GoTime = _go("TimeStamp", GO_ZERO_TIME)
    api_version: str = _go("APIVersion", "")
    api_name: str = _go("APIName", "")
    api_id: str = _go("APIID", "")
    org_id: str = _go("OrgID", "")
    oauth_id: str = _go("OauthID", "")
    request_time: Int64 = _go("RequestTime", 0)
    raw_request: str = _go("RawRequest", "")
    raw_response: str = _go("RawResponse", "")
    ip_address: str = _go("IPAddress", "")
    geo: TykGeo = msgspec.field(default_factory=TykGeo, name="Geo")
    network: TykNetworkStats = msgspec.field(default_factory=TykNetworkStats, name="Network")
    latency: TykLatency = msgspec.field(default_factory=TykLatency, name="Latency")
    tags: list[str] | None = _go("Tags", None)
    alias: str = _go("Alias", "")
    track_path: bool = _go("TrackPath", False)
    expire_at: GoTime = _go("ExpireAt", GO_ZERO_TIME)
    api_schema: str = _go("ApiSchema", "")
    original_path: str = _go("OriginalPath", "")
    listen_path: str = _go("ListenPath", "")
    graphql_stats: TykGraphQLStats = msgspec.field(default_factory=TykGraphQLStats, name="GraphQLStats")
    mcp_stats: TykMCPStats = msgspec.field(default_factory=TykMCPStats, name="MCPStats")
    collection_name: str = _go("CollectionName", "")  # json:"-", yet written by msgpack
    time_zone: str = _go("TimeZone", "")  # protobuf only (field 30): the Go zone name of TimeStamp

    @property
    def timestamp_ns(self) -> int:
        return go_time_ns(self.timestamp)

    @property
    def expire_at_ns(self) -> int:
        return go_time_ns(self.expire_at)


_MSGPACK_DECODER: Final = msgspec.msgpack.Decoder(TykAnalyticsRecord)


def decode_msgpack(element: bytes) -> TykAnalyticsRecord:
    """One Redis list element of `analytics-tyk-system-analytics[_N]`; TykDecodeError if it is not one."""
    # every field is built, GraphQL error paths (Any) included: an element whose one error path
    # held 16 M empty maps took the bridge 1.2 GB (pipelines.containers)
    if not msgpack_buildable(element):
        reason = f"not one msgpack value of at most {container_limit(len(element))} maps and lists"
        raise TykDecodeError(encoding="msgpack", reason=reason)
    try:
        return _MSGPACK_DECODER.decode(element)
    except DECODE_ERRORS as exc:  # RecursionError included: an element nested thousands deep
        raise TykDecodeError(encoding="msgpack", reason=str(exc)) from exc


def go_time_ns(value: GoTime) -> int:
    """Unix nanoseconds of Go's [sec, nsec] (may be outside int64: Go's zero time is year 1)."""
    sec, nsec = value
    return sec * NS + nsec


def firehose_time(value: GoTime) -> int | str:
    """The protocol's timestamp: int nanoseconds when it fits int64, else Go's RFC 3339 in UTC.

    The string form keeps instants a worker must see and reject (Go's zero time,
    year 1) rather than the bridge guessing; workers reject pre-epoch instants
    as `bad_timestamp`, counted by reason.
    """
    ns = go_time_ns(value)
    if _INT64_MIN <= ns <= _INT64_MAX:
        return ns
    sec, nsec = value
    try:
        t = _EPOCH + dt.timedelta(seconds=sec)  # strftime would not zero-pad year 1 on every platform
    except OverflowError as exc:
        raise TykDecodeError(encoding="time", reason=f"[{sec}, {nsec}] is outside years 1-9999") from exc
    base = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    frac = f".{nsec:09d}".rstrip("0") if nsec else ""
    return f"{base}{frac}Z"


class FirehoseConverter:
    """Decoded Tyk records -> firehose `tyk.analytics` records (plain dicts, JSON names)."""

    def __init__(self, digester: KeyDigester) -> None:
        self.digester = digester

    def convert(self, rec: TykAnalyticsRecord) -> dict[str, Any]:
        geo, net, lat = rec.geo, rec.network, rec.latency
        return {
            "method": rec.method,
            "host": rec.host,
            "path": rec.path,
            "raw_path": rec.raw_path,
            "content_length": rec.content_length,
            "user_agent": rec.user_agent,
            "day": rec.day,
            "month": rec.month,
            "year": rec.year,
            "hour": rec.hour,
            "response_code": rec.response_code,
            "api_key": self.digester.digest(rec.api_key),
            "timestamp": firehose_time(rec.timestamp),
            "api_version": rec.api_version,
            "api_name": rec.api_name,
            "api_id": rec.api_id,
            "org_id": rec.org_id,
            "oauth_id": rec.oauth_id,
            "request_time": rec.request_time,
            "ip_address": rec.ip_address,
            "geo": {
                "country": {"iso_code": geo.country.iso_code},
                "city": {"geoname_id": geo.city.geoname_id, "names": geo.city.names or {}},
                "location": {
                    "latitude": geo.location.latitude,
                    "longitude": geo.location.longitude,
                    "time_zone": geo.location.time_zone,
                },
            },
            "network": {
                "open_connections": net.open_connections,
                "closed_connections": net.closed_connections,
                "bytes_in": net.bytes_in,
                "bytes_out": net.bytes_out,
            },
            "latency": {"total": lat.total, "upstream": lat.upstream, "gateway": lat.gateway},
            "tags": self._tags(rec.tags),
            "alias": rec.alias,
            "track_path": rec.track_path,
            "expireAt": firehose_time(rec.expire_at),
            "original_path": rec.original_path,
            "listen_path": rec.listen_path,
        }

    def _tags(self, tags: list[str] | None) -> list[str]:
        # The gateway adds `key-<api_key>` (the raw key when hash_keys is off): digest it like api_key.
        if not tags:
            return []
        return [
            _KEY_TAG + self.digester.digest(t[len(_KEY_TAG) :]) if t.startswith(_KEY_TAG) else t for t in tags
        ]
