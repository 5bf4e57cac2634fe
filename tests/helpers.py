"""Small builders shared by tests (messages, records)."""

from __future__ import annotations

from typing import Any

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
