"""A catalogue of hostile firehose messages, each with the rejection it must produce.

Shared by the hostile-input tests (unit and component) and the fuzzers'
seed corpus. Frames are built with msgpack (independent of our encoder), so
they can be as malformed as an attacker likes.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import msgpack

from pipelines.firehose.protocol import RejectReason as R

DAY_NS = 86_400 * 10**9


def envelope(**overrides: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "v": 1,
        "node": "evil",
        "boot": 1,
        "seq": 0,
        "sent": 1,
        "count": 1,
        "enc": "msgpack",
    }
    env.update(overrides)
    return env


def good_record(now_ns: object, **overrides: Any) -> dict[str, Any]:  # hostile cases pass any value
    record = {
        "timestamp": now_ns,
        "org_id": "o",
        "api_id": "a",
        "response_code": 200,
        "latency": {"total": 5},
    }
    record.update(overrides)
    return record


def frames(topic: bytes, records: Any, **env: Any) -> list[bytes]:
    count = len(records) if isinstance(records, list) else 1
    env.setdefault("count", count)
    return [topic, msgpack.packb(envelope(**env)), msgpack.packb(records)]


def nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def hostile_messages(now_ns: int, node: str = "evil") -> list[tuple[str, list[bytes], R, int]]:
    """(name, frames, reason, rejected count). Each message has its own seq of `node`.

    The seqs of `node` are consecutive over the messages whose envelope names it
    readably; the others (another node, an unreadable envelope) carry seq 0 and
    take no number, so the catalogue sent in order shows no gap.
    """
    g = good_record
    counter = itertools.count()

    def f(topic: bytes, records: Any, **env: Any) -> list[bytes]:
        if "seq" not in env:  # consecutive: a refused message advances the sequence, a skipped seq is a loss
            env["seq"] = next(counter)
        env.setdefault("node", node)
        return frames(topic, records, **env)

    cases: list[tuple[str, list[bytes], R, int]] = [
        ("two frames", [b"tyk.analytics", msgpack.packb(envelope(node=node))], R.FRAME_COUNT, 1),
        ("four frames", [*f(b"tyk.analytics", [g(now_ns)]), b""], R.FRAME_COUNT, 1),
        ("unknown topic", f(b"tyk.secrets", [g(now_ns)]), R.BAD_TOPIC, 1),
        ("non-ascii topic", f("tyk.event.Böse".encode(), [g(now_ns)]), R.BAD_TOPIC, 1),
        ("binary topic", f(b"\xff\xfe\x00", [g(now_ns)]), R.BAD_TOPIC, 1),
        ("envelope garbage", [b"tyk.analytics", b"\xc1\xc1", msgpack.packb([g(now_ns)])], R.BAD_ENVELOPE, 1),
        ("envelope not a map", [b"tyk.analytics", msgpack.packb([1, 2]), b"\x90"], R.BAD_ENVELOPE, 1),
        ("non-utf8 node", [b"tyk.analytics", b"\x81\xa4node\xa2\xff\xfe", b"\x90"], R.BAD_ENVELOPE, 1),
        ("empty node", f(b"tyk.analytics", [g(now_ns)], node="", seq=0), R.BAD_ENVELOPE, 1),
        ("huge node", f(b"tyk.analytics", [g(now_ns)], node="n" * 10_000, seq=0), R.BAD_ENVELOPE, 1),
        ("negative seq", f(b"tyk.analytics", [g(now_ns)], seq=-1), R.BAD_ENVELOPE, 1),
        ("seq beyond int64", f(b"tyk.analytics", [g(now_ns)], seq=2**64 - 1), R.BAD_ENVELOPE, 1),
        ("float sent", f(b"tyk.analytics", [g(now_ns)], sent=math.nan, seq=0), R.BAD_ENVELOPE, 1),
        ("version 2", f(b"tyk.analytics", [g(now_ns)], v=2), R.UNSUPPORTED_VERSION, 1),
        ("xml", f(b"tyk.analytics", [g(now_ns)], enc="xml"), R.BAD_ENCODING, 1),
        ("count too big", f(b"tyk.analytics", [g(now_ns)], count=10**9), R.TOO_MANY_RECORDS, 10**9),
        ("count mismatch", f(b"tyk.analytics", [g(now_ns)] * 2, count=3), R.COUNT_MISMATCH, 1),
        (
            "payload garbage",
            [b"tyk.analytics", msgpack.packb(envelope(node=node, seq=next(counter))), b"\xc1"],
            R.BAD_PAYLOAD,
            1,
        ),
        (
            "deeply nested",
            [
                b"tyk.analytics",
                msgpack.packb(envelope(node=node, seq=next(counter))),
                b"\x91\x85" + _fields(now_ns) + b"\xa4tags" + nested(200_000),
            ],
            R.BAD_PAYLOAD,
            1,
        ),
        ("string code", f(b"tyk.analytics", [g(now_ns, response_code="200")]), R.BAD_RECORD, 1),
        ("absurd code", f(b"tyk.analytics", [g(now_ns, response_code=10**12)]), R.BAD_RECORD, 1),
        ("NaN latency", f(b"tyk.analytics", [g(now_ns, latency={"total": math.nan})]), R.BAD_RECORD, 1),
        (
            "latency beyond int64",
            f(b"tyk.analytics", [g(now_ns, latency={"total": 2**64 - 1})]),
            R.BAD_RECORD,
            1,
        ),
        ("huge org id", f(b"tyk.analytics", [g(now_ns, org_id="o" * 100_000)]), R.BAD_RECORD, 1),
        (
            "non-utf8 org",
            [
                b"tyk.analytics",
                msgpack.packb(envelope(node=node, seq=next(counter))),
                _non_utf8_record(now_ns),
            ],
            R.BAD_RECORD,
            1,
        ),
        (
            "missing org",
            f(b"tyk.analytics", [{k: v for k, v in g(now_ns).items() if k != "org_id"}]),
            R.MISSING_FIELD,
            1,
        ),
        ("NaN timestamp", f(b"tyk.analytics", [g(math.nan)]), R.BAD_TIMESTAMP, 1),
        ("text timestamp", f(b"tyk.analytics", [g("yesterday")]), R.BAD_TIMESTAMP, 1),
        ("negative timestamp", f(b"tyk.analytics", [g(-5)]), R.BAD_TIMESTAMP, 1),
        ("timestamp beyond int64", f(b"tyk.analytics", [g(2**64 - 1)]), R.BAD_TIMESTAMP, 1),
        ("far future", f(b"tyk.analytics", [g(now_ns + 400 * DAY_NS)]), R.FUTURE_TIMESTAMP, 1),
        ("far past", f(b"tyk.analytics", [g(now_ns - 400 * DAY_NS)]), R.PAST_TIMESTAMP, 1),
        ("epoch", f(b"tyk.analytics", [g(0)]), R.PAST_TIMESTAMP, 1),
        (
            "event name differs",
            f(b"tyk.event.QuotaExceeded", [{"event": "TokenCreated", "timestamp": now_ns, "org_id": "o"}]),
            R.EVENT_MISMATCH,
            1,
        ),
        (
            "heartbeat for another node",
            f(b"tyk.heartbeat", [{"node": "gw-victim", "timestamp": now_ns, "interval_ms": 3_600_000}]),
            R.NODE_MISMATCH,
            1,
        ),
        (
            "negative heartbeat interval",
            f(b"tyk.heartbeat", [{"node": "evil", "timestamp": now_ns, "interval_ms": -1}]),
            R.BAD_RECORD,
            1,
        ),
    ]
    return cases


def huge_array_message(now_ns: int) -> list[bytes]:
    """A valid record carrying a 200 000-element array in a field rollups skip: accepted."""
    return frames(b"tyk.analytics", [good_record(now_ns, tags=list(range(200_000)))])


def _fields(now_ns: int) -> bytes:
    out = b""
    for key, value in (("timestamp", now_ns), ("org_id", "o"), ("api_id", "a"), ("response_code", 200)):
        out += msgpack.packb(key) + msgpack.packb(value)
    return out


def _non_utf8_record(now_ns: int) -> bytes:
    record: bytes = msgpack.packb(good_record(now_ns, org_id="XXXX"))
    return b"\x91" + record.replace(b"\xa4XXXX", b"\xa4\xff\xfe\xfd\xfc")


def garbage_with_valid_envelopes(now_ns: int, node: str, boot: int, seq: int) -> list[list[bytes]]:
    """Four messages whose envelope reads (node, boot, seq..seq+3) but that are refused as a whole.

    Bad msgpack, a count that lies, an unsupported version, and an empty bad payload
    with count 0 (which once added nothing to `rejected`). Each was received: none is lost.
    """
    env = {"node": node, "boot": boot, "sent": now_ns}
    return [
        [b"tyk.analytics", msgpack.packb(envelope(**env, seq=seq)), b"\xc1"],
        frames(b"tyk.analytics", [good_record(now_ns)] * 2, **env, seq=seq + 1, count=3),
        frames(b"tyk.analytics", [good_record(now_ns)], **env, seq=seq + 2, v=2),
        [b"tyk.analytics", msgpack.packb(envelope(**env, seq=seq + 3, count=0)), b"\xc1"],
    ]
