"""Every rule of PROTOCOL.md v1 that the decoder enforces, with an independent encoder (msgpack)."""

from __future__ import annotations

import json
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec
import pytest

from pipelines.firehose import analytics_columns
from pipelines.firehose.codec import (
    DISCARDED_TOPIC,
    DecodedMessage,
    Limits,
    MessageDecoder,
    Rejection,
    discarded_message,
    json_array_exceeds,
    msgpack_array_length,
)
from pipelines.firehose.protocol import RejectReason, TopicKind
from pipelines.firehose.timestamps import to_ns
from pipelines.windows.tumbling import TumblingWindows
from tests.conftest import T0_NS
from tests.helpers import analytics, analytics_rows, event, message, timestamp_ext

pytestmark = pytest.mark.unit

DECODER = MessageDecoder()


def envelope(**overrides: Any) -> bytes:
    env = {"v": 1, "node": "gw1", "boot": 1, "seq": 0, "sent": T0_NS, "count": 1, "enc": "msgpack"}
    env.update(overrides)
    packed: bytes = msgpack.packb(env)
    return packed


def frames(topic: bytes, records: list[Any], **env: Any) -> list[bytes]:
    env.setdefault("count", len(records))
    return [topic, envelope(**env), msgpack.packb(records)]


def decoded(result: DecodedMessage | Rejection) -> DecodedMessage:
    assert isinstance(result, DecodedMessage), result
    return result


def rejected(result: DecodedMessage | Rejection, reason: RejectReason) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    return result


def test_a_good_analytics_message_decodes_every_record() -> None:
    records = [analytics(T0_NS + i, api=f"api{i}", code=429, latency=i) for i in range(3)]
    result = decoded(DECODER.decode(frames(b"tyk.analytics", records)))
    assert result.kind is TopicKind.ANALYTICS
    rows = analytics_rows(result.records)
    assert [r.api_id for r in rows] == ["api0", "api1", "api2"]
    assert [r.latency_ms for r in rows] == [0, 1, 2]
    assert result.envelope.node == "gw1"
    assert not result.rejected


def test_json_encoding_decodes_the_same_records() -> None:
    records = [analytics(T0_NS, org="o"), analytics("2026-11-27T10:15:02.123456789Z", org="p")]
    raw = [b"tyk.analytics", envelope(count=2, enc="json"), json.dumps(records).encode()]
    result = decoded(DECODER.decode(raw))
    assert [r.org_id for r in analytics_rows(result.records)] == ["o", "p"]


@pytest.mark.parametrize("count", [0, 2, 4])
def test_wrong_frame_count_is_rejected(count: int) -> None:
    rejected(DECODER.decode([b"tyk.analytics"] * count), RejectReason.FRAME_COUNT)


@pytest.mark.parametrize("reason", [RejectReason.FRAME_COUNT, RejectReason.MESSAGE_TOO_LARGE])
def test_a_message_discarded_on_receipt_is_rejected_with_its_reason(reason: RejectReason) -> None:
    stand_in = discarded_message(reason, "61 frames, 943718400 bytes, discarded on receipt")
    result = rejected(DECODER.decode(stand_in), reason)
    assert result.detail == "61 frames, 943718400 bytes, discarded on receipt"
    assert result.position is None  # nothing of the envelope was kept


def test_a_forged_discard_stand_in_is_still_a_frame_count_rejection() -> None:
    # sent by a peer: four frames, so it is a frame_count rejection whatever it names
    result = rejected(
        DECODER.decode([DISCARDED_TOPIC, b"bad_record", b"\xff" * 500, b""]), RejectReason.FRAME_COUNT
    )
    assert len(result.detail) <= 203


def test_message_over_the_size_limit_is_rejected() -> None:
    small = MessageDecoder(Limits(max_message_bytes=1_000))
    big = [analytics(T0_NS, path="x" * 2_000)]
    rejected(small.decode(frames(b"tyk.analytics", big)), RejectReason.MESSAGE_TOO_LARGE)


@pytest.mark.parametrize("topic", [b"tyk.other", b"tyk.event.", b"analytics", b"tyk.notice.a b", b"\xff\xfe"])
def test_unknown_topics_are_rejected(topic: bytes) -> None:
    result = rejected(DECODER.decode(frames(topic, [analytics(T0_NS)])), RejectReason.BAD_TOPIC)
    assert result.node == "gw1"


def test_undecodable_envelope_is_rejected() -> None:
    raw = [b"tyk.analytics", b"\xc1not msgpack", msgpack.packb([])]
    rejected(DECODER.decode(raw), RejectReason.BAD_ENVELOPE)


def test_envelope_missing_a_key_is_rejected() -> None:
    env = msgpack.packb({"v": 1, "node": "gw1", "boot": 1, "seq": 0, "count": 0, "enc": "msgpack"})
    rejected(DECODER.decode([b"tyk.analytics", env, msgpack.packb([])]), RejectReason.BAD_ENVELOPE)


def test_unknown_envelope_keys_are_ignored() -> None:
    raw = frames(b"tyk.analytics", [analytics(T0_NS)], trace="abc", shard=3)
    assert decoded(DECODER.decode(raw)).envelope.seq == 0


def test_unsupported_version_is_rejected() -> None:
    rejected(
        DECODER.decode(frames(b"tyk.analytics", [analytics(T0_NS)], v=2)), RejectReason.UNSUPPORTED_VERSION
    )


def test_unknown_encoding_is_rejected() -> None:
    rejected(
        DECODER.decode(frames(b"tyk.analytics", [analytics(T0_NS)], enc="cbor")), RejectReason.BAD_ENCODING
    )


def test_count_over_the_limit_is_rejected() -> None:
    result = DECODER.decode(frames(b"tyk.analytics", [analytics(T0_NS)], count=100_001))
    rejected(result, RejectReason.TOO_MANY_RECORDS)


def test_count_that_does_not_match_the_payload_is_rejected() -> None:
    raw = frames(b"tyk.analytics", [analytics(T0_NS), analytics(T0_NS)], count=3)
    rejected(DECODER.decode(raw), RejectReason.COUNT_MISMATCH)


def test_count_mismatch_is_detected_on_the_slow_path_too() -> None:
    raw = frames(b"tyk.analytics", [analytics(T0_NS), {"timestamp": T0_NS}], count=1)
    rejected(DECODER.decode(raw), RejectReason.COUNT_MISMATCH)


# A hostile payload's cost: 16 MiB of one-byte empty maps used to build an object per
# element (~950 MB) before the count check; the array header now rejects it first.
HOSTILE_ELEMENTS = (16 << 20) - 256


@pytest.mark.parametrize("topic", [b"tyk.analytics", b"tyk.heartbeat"])
def test_a_msgpack_count_mismatch_costs_the_array_header(topic: bytes) -> None:
    payload = b"\xdd" + HOSTILE_ELEMENTS.to_bytes(4, "big") + b"\x80" * HOSTILE_ELEMENTS
    raw = [topic, envelope(count=1), payload]
    tracemalloc.start()
    try:
        result = rejected(DECODER.decode(raw), RejectReason.COUNT_MISMATCH)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.detail == f"envelope count 1, payload {HOSTILE_ELEMENTS}"
    assert result.node == "gw1"
    assert peak < 1 << 20


def test_a_json_count_mismatch_is_counted_before_records_are_split() -> None:
    elements = HOSTILE_ELEMENTS // 3
    payload = b"[" + b"{}," * (elements - 1) + b"{}]"
    raw = [b"tyk.analytics", envelope(count=2, enc="json"), payload]
    tracemalloc.start()
    try:
        result = rejected(DECODER.decode(raw), RejectReason.COUNT_MISMATCH)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "envelope count 2" in result.detail
    assert peak < 1 << 20


# A record's timestamp of no timestamp's shape: typed Any, it was built whatever it held (one
# 16 MiB record whose timestamp was an array of empty maps took a worker 1.2 GB and 5 s).
_STAMPED_RECORDS: dict[bytes, dict[str, Any]] = {
    b"tyk.analytics": {"org_id": "o", "api_id": "a", "response_code": 200},
    b"tyk.event.TokenCreated": {"event": "TokenCreated", "org_id": "o"},
    b"tyk.notice.ApiUpdated": {"command": "ApiUpdated"},
    b"tyk.heartbeat": {"node": "gw1"},
}
_MARK = "\x00stamp"


def _with_hostile_timestamp(record: dict[str, Any], enc: str) -> bytes:
    """A payload of one record whose timestamp is an array of ~1 M empty maps."""
    stamped = [{**record, "timestamp": _MARK}]
    if enc == "json":
        elements = (1 << 20) // 3
        hostile = b"[" + b"{}," * (elements - 1) + b"{}]"
        return json.dumps(stamped).encode().replace(json.dumps(_MARK).encode(), hostile)
    elements = 1 << 20
    hostile = b"\xdd" + elements.to_bytes(4, "big") + b"\x80" * elements
    packed: bytes = msgpack.packb(stamped)
    return packed.replace(msgpack.packb(_MARK), hostile)


@pytest.mark.parametrize("enc", ["msgpack", "json"])
@pytest.mark.parametrize("topic", list(_STAMPED_RECORDS))
def test_a_timestamp_of_no_timestamps_shape_is_rejected_unbuilt(topic: bytes, enc: str) -> None:
    raw = [topic, envelope(enc=enc), _with_hostile_timestamp(_STAMPED_RECORDS[topic], enc)]
    tracemalloc.start()
    try:
        result = decoded(DECODER.decode(raw))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result.records) == 0
    assert [r.reason for r in result.rejected] == [RejectReason.BAD_TIMESTAMP]
    assert peak < 1 << 20


def test_a_timestamp_extension_is_read_to_the_nanosecond() -> None:
    assert to_ns(timestamp_ext(1_795_774_502, 0, 4)) == 1_795_774_502 * 1_000_000_000
    for size in (8, 12):
        assert to_ns(timestamp_ext(1_795_774_502, 999_999_999, size)) == 1_795_774_502_999_999_999
        assert to_ns(timestamp_ext(1_795_774_502, 500, size)) == 1_795_774_502_000_000_500
        assert to_ns(timestamp_ext(0, 1, size)) == 1
        # what msgspec refuses to make a datetime of is refused as ever
        assert to_ns(timestamp_ext(1_795_774_502, 1_000_000_000, size)) is None
    assert to_ns(timestamp_ext(-1, 999_999_999, 12)) is None  # before the epoch
    assert to_ns(timestamp_ext(9_223_372_036, 854_775_807, 12)) == 2**63 - 1
    assert to_ns(timestamp_ext(9_223_372_036, 854_775_808, 12)) is None  # past int64
    assert to_ns(timestamp_ext(2**63 - 1, 0, 12)) is None
    assert to_ns(msgspec.msgpack.Ext(-1, b"\x00" * 5)) is None  # no timestamp's length
    assert to_ns(msgspec.msgpack.Ext(5, b"\x00" * 4)) is None  # another extension


@pytest.mark.parametrize("size", [8, 12])
@pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])
def test_a_timestamp_extension_1ns_before_a_window_edge_stays_in_the_earlier_window(
    native: bool, size: int
) -> None:
    edge_s = T0_NS // 1_000_000_000  # a whole minute
    records = [
        analytics(timestamp_ext(edge_s - 1, 999_999_999, size)),
        analytics(timestamp_ext(edge_s, 0, size)),
    ]
    payload = msgspec.msgpack.encode(records)
    if native:
        assert analytics_columns.decode(payload, 2) is not None, "the native core declined it"
    decoder = DECODER if native else MessageDecoder(analytics_columns=False)
    result = decoded(decoder.decode([b"tyk.analytics", envelope(count=2), payload]))
    assert not result.rejected
    stamps = [r.timestamp_ns for r in analytics_rows(result.records)]
    assert stamps == [edge_s * 1_000_000_000 - 1, edge_s * 1_000_000_000]
    assert [TumblingWindows(60).start_s(ns) for ns in stamps] == [edge_s - 60, edge_s]


@pytest.mark.parametrize(
    ("payload", "limit", "exceeds"),
    [
        (b"[]", 0, False),
        (b"[{}]", 0, False),  # one element: decoding it is cheap, and the decoder counts it
        (b"[{},{}]", 1, True),
        (b'[{"a":[1,2,3],"b":{"c":","}},{}]', 2, False),
        (b'[{"a":"\\\\","b":"]"}, 1, 2]', 2, True),  # an escaped backslash ends its string
        (b'[{"a":"x\\",[{"}, 1]', 2, False),  # an escaped quote does not
        (b'["x,y", "[", "{"]', 3, False),
    ],
)
def test_json_elements_are_counted_at_the_top_level(payload: bytes, limit: int, exceeds: bool) -> None:
    assert json_array_exceeds(payload, limit) is exceeds


HOSTILE_STRINGS = [
    b"[" + b'"\\' * 1000,  # every quote escaped but the first: no string ever closes
    b"[" + b'"\\' * 1000 + b"\\",  # ending in a lone backslash
    b'["' + b"a" * 1000,
    b"[" + b'"' * 999,  # an odd number of quotes
    b'["\\' + b"\n" * 1000,  # escaped raw newlines (invalid JSON; the decoder says so)
]


def _calls_during(work: Callable[[], object]) -> int:
    """Python and C function calls made while `work` runs (sys.setprofile sees both)."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize(
    "payload",
    [
        *HOSTILE_STRINGS,
        b"[[" + b"," * 30_000 + b"]]",  # commas nested in the one element: counted by none
        b"[[" + b'"",' * 10_000 + b"]]",
        b"[" + b"[]" * 15_000 + b"]",
    ],
)
def test_counting_json_elements_costs_no_call_per_token(payload: bytes) -> None:
    # Found by attack: the scan stepped from token to token in Python, a call or more each:
    # 16 MiB of commas inside a nested array held a worker 9.5 s (and every quote once
    # started a rescan to the end: quadratic, see pipelines.json_tokens).
    assert _calls_during(lambda: json_array_exceeds(payload, 2)) < 10


def test_a_hostile_json_string_is_rejected_after_one_pass() -> None:
    payload = b"[" + b'"\\' * 150_000  # 300 KB
    raw = [b"tyk.analytics", envelope(count=1, enc="json"), payload]
    result = rejected(DECODER.decode(raw), RejectReason.BAD_PAYLOAD)
    assert result.count == 1


@pytest.mark.parametrize(
    ("payload", "length"),
    [
        (msgpack.packb([]), 0),
        (msgpack.packb([1] * 15), 15),
        (msgpack.packb([1] * 16), 16),
        (msgpack.packb([1] * 70_000), 70_000),
        (msgpack.packb({"a": 1}), None),
        (b"", None),
        (b"\xdc\x00", None),
    ],
)
def test_msgpack_array_headers_are_read(payload: bytes, length: int | None) -> None:
    assert msgpack_array_length(payload) == length


def test_undecodable_payload_is_rejected_with_its_record_count() -> None:
    raw = [b"tyk.analytics", envelope(count=5), b"\xc1\xc1"]
    result = rejected(DECODER.decode(raw), RejectReason.BAD_PAYLOAD)
    assert result.count == 5


def test_payload_that_is_not_an_array_is_rejected() -> None:
    raw = [b"tyk.analytics", envelope(count=1), msgpack.packb({"timestamp": T0_NS})]
    rejected(DECODER.decode(raw), RejectReason.BAD_PAYLOAD)


@pytest.mark.parametrize("missing", ["timestamp", "org_id", "api_id", "response_code"])
def test_a_record_missing_a_required_field_rejects_only_itself(missing: str) -> None:
    bad = analytics(T0_NS, api="bad")
    del bad[missing]
    records = [analytics(T0_NS, api="a"), bad, analytics(T0_NS, api="b")]
    result = decoded(DECODER.decode(frames(b"tyk.analytics", records)))
    assert [r.api_id for r in analytics_rows(result.records)] == ["a", "b"]
    assert [(r.reason, r.count) for r in result.rejected] == [(RejectReason.MISSING_FIELD, 1)]
    assert missing in result.rejected[0].detail


@pytest.mark.parametrize(
    ("field", "value"),
    [("response_code", "200"), ("response_code", 1.5), ("org_id", 7), ("api_id", None), ("latency", "fast")],
)
def test_a_record_with_a_wrong_type_rejects_only_itself(field: str, value: Any) -> None:
    records = [analytics(T0_NS), {**analytics(T0_NS), field: value}]
    result = decoded(DECODER.decode(frames(b"tyk.analytics", records)))
    assert len(result.records) == 1
    assert [r.reason for r in result.rejected] == [RejectReason.BAD_RECORD]


def test_non_utf8_strings_reject_the_record_not_the_worker() -> None:
    good = msgpack.packb(analytics(T0_NS))
    bad = msgpack.packb(analytics(T0_NS, org="ORG")).replace(b"\xa3ORG", b"\xa3\xff\xfe\xfd")
    payload = b"\x92" + good + bad
    result = decoded(DECODER.decode([b"tyk.analytics", envelope(count=2), payload]))
    assert len(result.records) == 1
    assert result.rejected[0].reason is RejectReason.BAD_RECORD


def test_unknown_record_fields_are_ignored_and_optional_ones_default() -> None:
    record = {
        "timestamp": T0_NS,
        "org_id": "o",
        "api_id": "a",
        "response_code": 200,
        "geo": {"x": [1, {"y": 2}]},
    }
    result = decoded(DECODER.decode(frames(b"tyk.analytics", [record])))
    assert analytics_rows(result.records)[0].latency_ms == 0


def test_event_records_must_match_their_topic() -> None:
    records = [event("RatelimitExceeded", T0_NS), event("QuotaExceeded", T0_NS)]
    result = decoded(DECODER.decode(frames(b"tyk.event.RatelimitExceeded", records)))
    assert [r.event for r in result.structs] == ["RatelimitExceeded"]
    assert [(r.reason, r.count) for r in result.rejected] == [(RejectReason.EVENT_MISMATCH, 1)]


@pytest.mark.parametrize("missing", ["event", "timestamp", "org_id"])
def test_event_required_fields(missing: str) -> None:
    record = event("RatelimitExceeded", T0_NS)
    del record[missing]
    result = decoded(DECODER.decode(frames(b"tyk.event.RatelimitExceeded", [record])))
    assert not result.records
    assert result.rejected[0].reason is RejectReason.MISSING_FIELD


@pytest.mark.parametrize("missing", ["command", "timestamp"])
def test_notice_required_fields(missing: str) -> None:
    record = {"command": "ApiUpdated", "timestamp": T0_NS, "payload": "", "signature": "x", "algorithm": 5}
    del record[missing]
    result = decoded(DECODER.decode(frames(b"tyk.notice.ApiUpdated", [record])))
    assert not result.records
    assert result.rejected[0].reason is RejectReason.MISSING_FIELD


def test_heartbeat_decodes_with_its_interval() -> None:
    hb = {"node": "gw1", "timestamp": T0_NS, "interval_ms": 250, "version": "5.8"}
    result = decoded(DECODER.decode(frames(b"tyk.heartbeat", [hb])))
    assert result.kind is TopicKind.HEARTBEAT
    assert result.structs[0].interval_ms == 250


def test_all_three_timestamp_forms_decode() -> None:
    ext = msgpack.Timestamp(T0_NS // 1_000_000_000, 123_456_789)
    records = [analytics(T0_NS), analytics("2026-11-27T10:15:00.5+01:00"), analytics(ext)]
    result = decoded(DECODER.decode(frames(b"tyk.analytics", records)))
    stamps = [r.timestamp_ns for r in analytics_rows(result.records)]
    assert stamps[0] == T0_NS
    assert stamps[1] == T0_NS - 3_600_000_000_000 + 500_000_000  # 10:15:00.5+01:00 is 09:15:00.5Z
    # the extension to the nanosecond (msgspec's datetime would round it to 123_457 us)
    assert stamps[2] == T0_NS + 123_456_789


def test_the_reference_decoder_keeps_each_timestamp_form() -> None:
    ext = msgpack.Timestamp(T0_NS // 1_000_000_000, 123_456_789)
    records = [analytics(T0_NS), analytics("2026-11-27T10:15:00.5+01:00"), analytics(ext)]
    result = decoded(MessageDecoder(analytics_columns=False).decode(frames(b"tyk.analytics", records)))
    stamps = [r.timestamp for r in result.structs]
    assert stamps[0] == T0_NS
    assert stamps[1] == "2026-11-27T10:15:00.5+01:00"
    # the extension as it came (protocol.WireTimestamp), read to the nanosecond
    assert isinstance(stamps[2], msgspec.msgpack.Ext)
    assert to_ns(stamps[2]) == T0_NS + 123_456_789


def test_node_longer_than_128_bytes_is_rejected() -> None:
    rejected(DECODER.decode(frames(b"tyk.analytics", [], node="n" * 129)), RejectReason.BAD_ENVELOPE)


UNPRINTABLE_NODES = (
    "gw\n2026-12-07 ERROR forged line",
    "ansi\x1b[2J",
    "nul\x00",
    "del\x7f",
    "c1\x85",
    "bidi\u202e",
    # found by a second attack: invisible characters the first list missed (soft hyphen, Arabic
    # letter mark, Mongolian vowel separator, a tag character, private use, unassigned)
    "gw-1\u00ad",
    "gw\u061c",
    "gw\u180e",
    "gw\U000e0061",
    "gw\ue000",
    "gw\u0378",
)


@pytest.mark.parametrize("node", UNPRINTABLE_NODES)
def test_a_node_that_is_not_printable_text_is_rejected_and_touches_no_sequence(node: str) -> None:
    # Found by attack: a newline in a node name forged whole log lines, ESC sequences reached
    # terminals through `tykpulse status`, and alerts carried them as labels.
    rejection = rejected(DECODER.decode(frames(b"tyk.analytics", [], node=node)), RejectReason.BAD_ENVELOPE)
    assert rejection.node == ""  # no publisher to hold it against
    assert "control or invisible" in rejection.detail


@pytest.mark.parametrize(
    "node",
    [
        "gw-1.eu-west.internal",
        "solo-5e9d9544a1dcd60001d0ed20",
        "n\u00e9ud \u7f51\u5173",
        "mu\u0308nchen-gw",  # a combining mark spells a letter: kept
        "tyk-gateway-7d9f8c-x2x4z",
    ],
)
def test_printable_nodes_of_any_script_are_accepted(node: str) -> None:
    assert decoded(DECODER.decode(frames(b"tyk.analytics", [], node=node))).envelope.node == node


def test_our_encoder_round_trips_through_the_decoder() -> None:
    raw = message("tyk.event.TokenCreated", [event("TokenCreated", T0_NS)], seq=7, enc="json")
    result = decoded(DECODER.decode(raw))
    assert (result.envelope.seq, result.envelope.enc, result.name) == (7, "json", "TokenCreated")
