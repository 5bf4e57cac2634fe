"""The native analytics decoder against the reference (codec.py + timestamps.py), record for record.

The native decoder either gives exactly the reference's columns (and envelope) or declines (None),
whatever the input: random, hostile or malformed. For ordinary payloads, the
ones tykpulse's publishers and bridges send, it never declines.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgpack
import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines._native import MessageColumns, analytics_envelopes
from pipelines.firehose.codec import DecodedMessage, MessageDecoder
from pipelines.firehose.protocol import TOPIC_ANALYTICS, RejectReason
from pipelines.firehose.timestamps import INVALID_NS, to_ns_array
from tests.helpers import AnalyticsRow, analytics_rows, timestamp_ext
from tests.helpers import message as firehose_message

pytestmark = pytest.mark.unit

_DECODER = MessageDecoder(analytics_columns=False)
_WORKER_DECODER = MessageDecoder()
_ENVELOPE = {"v": 1, "node": "n", "boot": 1, "seq": 1, "sent": 1, "enc": "msgpack"}


def reference(
    payload: bytes, count: int
) -> tuple[list[int], list[str], list[str], list[int], list[int]] | None:
    """The Python path's columns, or None when it rejects anything in the message."""
    envelope = msgpack.packb({**_ENVELOPE, "count": count})
    result = _DECODER.decode([TOPIC_ANALYTICS.encode(), envelope, payload])
    if not isinstance(result, DecodedMessage) or result.rejected:
        return None
    records = result.structs  # the reference decoder's: structs, never columns
    return (
        to_ns_array([r.timestamp for r in records]).tolist(),
        [r.org_id for r in records],
        [r.api_id for r in records],
        [r.response_code for r in records],
        [r.latency.total for r in records],
    )


def native(payload: bytes, count: int) -> tuple[list[int], list[str], list[str], list[int], list[int]] | None:
    decoded = MessageColumns.decode(payload, count)
    if decoded is None:
        return None
    ts, org, api, code, latency = decoded.columns()
    as_list = [np.frombuffer(c, dtype="<i8").tolist() for c in (ts, code, latency)]
    return as_list[0], expand(*org), expand(*api), as_list[1], as_list[2]


def expand(values: list[str], codes: bytes) -> list[str]:
    return [values[c] for c in np.frombuffer(codes, dtype="<u4")]


def check(payload: bytes, count: int) -> tuple[Any, Any]:
    got, expected = native(payload, count), reference(payload, count)
    if got is not None:
        assert got == expected
    return got, expected


_UTC = dt.UTC
_times = st.datetimes(
    min_value=dt.datetime(1960, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(_UTC)
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    when = draw(_times)
    digits = draw(st.integers(0, 9))
    frac = (
        ""
        if digits == 0
        else "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits)))
    )
    tz = draw(st.sampled_from(["Z", "z", "+00:00", "+05:30", "-08:00", "+23:59", "-00:00"]))
    sep = draw(st.sampled_from("Tt "))
    return when.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + tz


good_timestamps = st.one_of(
    st.integers(0, 2**63 - 1),
    rfc3339(),
    st.builds(msgpack.Timestamp.from_datetime, _times.filter(lambda t: t.year >= 1970)),
    st.builds(lambda s, n: msgpack.Timestamp(s, n), st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)),
)
hostile_timestamps = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=40),
    st.sampled_from(
        ["2026-02-29T00:00:00Z", "2026-11-27T10:15:02Z\n", "0000-01-01T00:00:00Z", "2026-13-01T00:00:00Z"]
    ),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.binary(max_size=8),
    st.builds(
        lambda s, n: msgpack.Timestamp(s, n), st.integers(-(2**40), 2**40), st.integers(0, 999_999_999)
    ),
    st.lists(st.integers(-(2**63), 2**64 - 1), max_size=2),
)
identifiers = st.text(max_size=30) | st.text(min_size=1020, max_size=1030, alphabet="aé😀")
good_records = st.fixed_dictionaries(
    {
        "timestamp": good_timestamps,
        "org_id": st.text(max_size=30),
        "api_id": st.text(max_size=30),
        "response_code": st.integers(-1, 999),
    },
    optional={
        "latency": st.fixed_dictionaries(
            {}, optional={"total": st.integers(-(2**63), 2**63 - 1), "upstream": st.integers(0, 10)}
        ),
        "api_key": st.text(max_size=20),
        "tags": st.lists(st.text(max_size=5), max_size=3),
        "geo": st.dictionaries(
            st.text(max_size=5), st.integers(-(2**63), 2**64 - 1) | st.floats() | st.none(), max_size=3
        ),
        "raw_path": st.binary(max_size=10),
    },
)
hostile_values = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.floats(),
    st.binary(max_size=5),
    st.lists(st.integers(-(2**63), 2**64 - 1), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**64 - 1), max_size=2),
)
hostile_records = st.fixed_dictionaries(
    {},
    optional={
        "timestamp": good_timestamps | hostile_timestamps,
        "org_id": identifiers | hostile_values,
        "api_id": identifiers | hostile_values,
        "response_code": st.integers(-3, 1001) | hostile_values,
        "latency": st.fixed_dictionaries(
            {}, optional={"total": st.integers(-(2**63), 2**64 - 1) | hostile_values}
        )
        | hostile_values,
        "junk": hostile_values,
    },
)


def pack(records: list[Any]) -> bytes:
    packed: bytes = msgpack.packb(records, use_bin_type=True, datetime=False)
    return packed


def damaged(payload: bytes, data: st.DataObject) -> bytes:
    """`payload` with one to three of its bytes overwritten."""
    changed = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        changed[data.draw(st.integers(0, len(changed) - 1))] = data.draw(st.integers(0, 255))
    return bytes(changed)


@given(st.lists(good_records, max_size=20))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_ordinary_payloads_are_decoded_natively_and_identically(records: list[dict[str, Any]]) -> None:
    payload = pack(records)
    got, expected = check(payload, len(records))
    assert expected is not None
    assert got is not None, "the native decoder declined an ordinary payload"


@given(st.lists(good_records | hostile_records, max_size=12), st.integers(-1, 1))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_hostile_records_are_decoded_identically_or_declined(records: list[Any], lie: int) -> None:
    check(pack(records), max(0, len(records) + lie))


@given(st.binary(max_size=200), st.integers(0, 5))
def test_arbitrary_bytes_are_decoded_identically_or_declined(payload: bytes, count: int) -> None:
    check(payload, count)


@given(st.lists(good_records, min_size=1, max_size=5), st.data())
def test_damaged_payloads_are_decoded_identically_or_declined(
    records: list[Any], data: st.DataObject
) -> None:
    payload = damaged(pack(records), data)
    cut = data.draw(st.integers(0, len(payload)))
    check(payload[:cut], len(records))
    check(payload, len(records))


def test_duplicate_keys_are_left_to_the_reference() -> None:
    record = b"\x85\xa9timestamp\x01\xa6org_id\xa1o\xa6api_id\xa1a\xadresponse_code\xcc\xc8\xa6org_id\xa1p"
    assert MessageColumns.decode(b"\x91" + record, 1) is None
    assert reference(b"\x91" + record, 1) is not None


def test_timestamp_extension_is_read_to_the_nanosecond_as_the_reference_does() -> None:
    nanos = [123_456_789, 999_999_999, 999_999_500, 500, 1]
    payload = pack(
        [
            {
                "timestamp": msgpack.Timestamp(1_795_774_559, n),
                "org_id": "o",
                "api_id": "a",
                "response_code": 200,
            }
            for n in nanos
        ]
    )
    got, expected = check(payload, len(nanos))
    assert got is not None
    assert got[0] == expected[0] == [1_795_774_559_000_000_000 + n for n in nanos]


@given(st.sampled_from([4, 8, 12]), st.integers(-(2**40), 2**40), st.integers(0, 2**32 - 1))
def test_timestamp_extensions_of_every_form_are_read_exactly_or_declined(
    size: int, seconds: int, nanos: int
) -> None:
    """Hand-made forms too: a 12-byte one for any instant, nanoseconds past 999_999_999 (malformed)."""
    seconds = {4: seconds % 2**32, 8: seconds % 2**34, 12: seconds}[size]
    nanos = {4: 0, 8: nanos % 2**30, 12: nanos}[size]
    record = {
        "timestamp": timestamp_ext(seconds, nanos, size),
        "org_id": "o",
        "api_id": "a",
        "response_code": 200,
    }
    payload = msgspec.msgpack.encode([record])
    ns = seconds * 1_000_000_000 + nanos
    exact = nanos < 1_000_000_000 and 0 <= ns < 2**63
    got, expected = check(payload, 1)
    assert expected is not None
    assert expected[0] == [ns if exact else INVALID_NS]
    assert got is not None or not exact, "the native decoder declined a valid extension"


# a decoded message's rows and rejections, or a refused message's reason and count
Decoded = tuple[list[AnalyticsRow], list[tuple[RejectReason, int]]] | tuple[RejectReason, int]


def decoded_the_workers_way(payload: bytes, count: int, enc: str = "msgpack") -> tuple[Decoded, Decoded]:
    """What a worker's decoder and the reference make of one message: rows and rejections, or the refusal."""
    frames = [TOPIC_ANALYTICS.encode(), msgpack.packb({**_ENVELOPE, "count": count, "enc": enc}), payload]
    results: list[Decoded] = []
    for decoder in (_WORKER_DECODER, _DECODER):
        result = decoder.decode(frames)
        if isinstance(result, DecodedMessage):
            rejected = [(r.reason, r.count) for r in result.rejected]
            results.append((analytics_rows(result.records), rejected))
        else:
            results.append((result.reason, result.count))
    return results[0], results[1]


@given(st.lists(good_records | hostile_records, max_size=12), st.integers(-1, 1))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_a_worker_decodes_every_message_as_the_reference_does(records: list[Any], lie: int) -> None:
    """Whether the native core decodes the payload or declines it: the same rows, the same rejections."""
    got, expected = decoded_the_workers_way(pack(records), max(0, len(records) + lie))
    assert got == expected


@given(st.lists(good_records, min_size=1, max_size=5), st.data())
def test_a_worker_decodes_damaged_messages_as_the_reference_does(
    records: list[Any], data: st.DataObject
) -> None:
    got, expected = decoded_the_workers_way(damaged(pack(records), data), len(records))
    assert got == expected


# The envelope: the native core reads those of many messages in one call (analytics_envelopes)
# and must read it as the reference does, or decline.

good_envelope = {
    "v": st.just(1),
    "node": st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=128),
    "boot": st.integers(0, 2**63 - 1),
    "seq": st.integers(0, 2**63 - 1),
    "sent": st.integers(-(2**63), 2**63 - 1),
    "enc": st.just("msgpack"),
}
envelope_values = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from(["msgpack", "json", "", "gw\n1", "n" * 129, "gé", "\u202e"]),
    st.text(max_size=10),
    hostile_values,
)


def decoded_with_envelope(envelope: bytes, payload: bytes) -> tuple[Any, Any]:
    """What a worker's decoder and the reference make of one message, envelope included."""
    frames = [TOPIC_ANALYTICS.encode(), envelope, payload]
    results: list[Any] = []
    for decoder in (_WORKER_DECODER, _DECODER):
        result = decoder.decode(frames)
        if isinstance(result, DecodedMessage):
            rejected = [(r.reason, r.count) for r in result.rejected]
            results.append((result.envelope, analytics_rows(result.records), rejected))
        else:
            results.append((result.reason, result.count, result.node, result.position))
    return results[0], results[1]


ENVELOPE_KEYS = [*good_envelope, "count"]


@given(
    st.lists(good_records, max_size=4),
    st.fixed_dictionaries(good_envelope),
    # one or two fields changed to a value near a bound or of another type, or a later version's key
    st.dictionaries(
        st.sampled_from([*ENVELOPE_KEYS, "later"]),
        st.integers(-3, 3) | st.sampled_from([2**63 - 1, 2**63, -(2**63), 2**64 - 1]) | envelope_values,
        max_size=2,
    ),
    st.lists(st.sampled_from(ENVELOPE_KEYS), max_size=1),  # a field left out
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_hostile_envelopes_are_read_as_the_reference_reads_them(
    records: list[Any], fields: dict[str, Any], changed: dict[str, Any], missing: list[str]
) -> None:
    envelope = {**fields, "count": len(records), **changed}
    for key in missing:
        envelope.pop(key, None)
    got, expected = decoded_with_envelope(msgpack.packb(envelope, use_bin_type=True), pack(records))
    assert got == expected


BOUNDARY_VALUES = [
    *range(-3, 4),
    2**63 - 1,
    2**63,
    -(2**63),
    2**64 - 1,
    100_000,
    100_001,
    1.0,
    None,
    True,
    b"msgpack",
    "msgpack",
    "json",
    "",
    " ",
    "~" * 128,
    "n" * 129,
    "gw\n1",
    "gw\x7f",
    "gé",
    "\u202e",
    [],
    {},
]


def test_every_field_at_its_bounds_is_read_as_the_reference_reads_it() -> None:
    records = [{"timestamp": 1, "org_id": "o", "api_id": "a", "response_code": 200}]
    usual = {**_ENVELOPE, "count": 1}
    for key in [*usual, "later"]:
        for value in BOUNDARY_VALUES:
            envelope = msgpack.packb({**usual, key: value}, use_bin_type=True)
            got, expected = decoded_with_envelope(envelope, pack(records))
            assert got == expected, (key, value)
        left_out = msgpack.packb({k: v for k, v in usual.items() if k != key})
        got, expected = decoded_with_envelope(left_out, pack(records))
        assert got == expected, key


@given(st.lists(good_records, max_size=3), st.fixed_dictionaries(good_envelope), st.data())
def test_damaged_envelopes_are_read_as_the_reference_reads_them(
    records: list[Any], fields: dict[str, Any], data: st.DataObject
) -> None:
    envelope = damaged(msgpack.packb({**fields, "count": len(records)}), data)
    cut = data.draw(st.integers(0, len(envelope)))
    for frame in (envelope, envelope[:cut], envelope + b"\xc0"):
        got, expected = decoded_with_envelope(frame, pack(records))
        assert got == expected


def test_a_repeated_envelope_key_is_left_to_the_reference() -> None:
    envelope = msgpack.packb({**_ENVELOPE, "count": 0})
    repeated = bytes([envelope[0] + 1]) + envelope[1:] + b"\xa3seq\x05"  # one key more: seq again
    assert analytics_envelopes(
        [[TOPIC_ANALYTICS.encode(), repeated, pack([])]], TOPIC_ANALYTICS.encode(), 2**20, 10, 128
    ) == [None]
    got, expected = decoded_with_envelope(repeated, pack([]))
    assert got == expected


def test_the_messages_tykpulse_publishes_are_read_natively() -> None:
    records = [{"timestamp": 1, "org_id": "o", "api_id": "a", "response_code": 200}]
    frames = firehose_message(TOPIC_ANALYTICS, records, node="gw-1", seq=3)
    read = analytics_envelopes([frames], TOPIC_ANALYTICS.encode(), 2**20, 100_000, 128)
    assert read == [("gw-1", 1, 3, 0, 1)]
    got, expected = decoded_with_envelope(frames[1], frames[2])
    assert got == expected
