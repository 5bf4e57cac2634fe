"""Small builders shared by tests (messages, records)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from pipelines.firehose.analytics_columns import FlushAnalytics, MessageColumns, from_records
from pipelines.firehose.codec import MessageEncoder

_ENCODERS = {"msgpack": MessageEncoder("msgpack"), "json": MessageEncoder("json")}


def message(
    topic: str,
    records: list[Any],
    *,
    node: str = "gw1",
    boot: int = 1,
    seq: int = 0,
    enc: str = "msgpack",
    sent: int = 0,
    **envelope: Any,
) -> list[bytes]:
    frames = _ENCODERS[enc].encode(
        topic, node=node, boot=boot, seq=seq, sent=sent, records=records, extra_envelope=envelope or None
    )
    return frames


def analytics(
    ts: Any,
    *,
    org: str = "org1",
    api: str = "api1",
    code: int = 200,
    key: str = "k1",
    latency: int = 10,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "timestamp": ts,
        "org_id": org,
        "api_id": api,
        "response_code": code,
        "api_key": key,
        "latency": {"total": latency, "upstream": latency, "gateway": 0},
        **extra,
    }


def event(name: str, ts: Any, *, org: str = "org1", api: str = "api1", key: str = "k1") -> dict[str, Any]:
    return {"event": name, "timestamp": ts, "org_id": org, "api_id": api, "key": key}


def notice(command: str, ts: Any, payload: str = "") -> dict[str, Any]:
    return {"command": command, "timestamp": ts, "payload": payload, "signature": "", "algorithm": 5}


@dataclasses.dataclass(frozen=True)
class AnalyticsRow:
    timestamp_ns: int
    org_id: str
    api_id: str
    response_code: int
    latency_ms: int


def analytics_rows(records: list[Any] | MessageColumns) -> list[AnalyticsRow]:
    """A decoded analytics message's records, a row each, whichever decoder built them."""
    columns = FlushAnalytics.of(records if isinstance(records, MessageColumns) else from_records(records))
    return [
        AnalyticsRow(int(ts), columns.org_values[org], columns.api_values[api], int(code), int(latency))
        for ts, org, api, code, latency in zip(
            columns.timestamp_ns,
            columns.org_codes,
            columns.api_codes,
            columns.response_code,
            columns.latency_ms,
            strict=True,
        )
    ]


def varint(n: int) -> bytes:
    """A protobuf base-128 varint."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return bytes([*out, low])
        out.append(low | 0x80)


def protobuf_field(number: int, wire: int, payload: bytes) -> bytes:
    """One protobuf field: its tag, then a length-delimited payload (wire 2) or the payload as it is."""
    return varint(number << 3 | wire) + (varint(len(payload)) + payload if wire == 2 else payload)


def timestamp_ext(seconds: int, nanos: int, size: int) -> msgspec.msgpack.Ext:
    """The timestamp extension in its form of `size` bytes, even where a shorter one would do."""
    if size == 4:
        return msgspec.msgpack.Ext(-1, seconds.to_bytes(4, "big"))
    if size == 8:
        return msgspec.msgpack.Ext(-1, (nanos << 34 | seconds).to_bytes(8, "big"))
    return msgspec.msgpack.Ext(-1, nanos.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True))
