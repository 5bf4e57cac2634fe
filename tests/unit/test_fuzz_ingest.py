"""Property tests: arbitrary and hostile messages through the decoder and the worker loop.

Whatever arrives, Ingestor.ingest + take + compute never raise, good records
from other publishers all survive, and every message is either accepted or
rejected with a reason. `make fuzz` runs these with many more examples
(TYKPULSE_HYPOTHESIS_PROFILE=long) and a coverage-guided atheris fuzzer.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.firehose.codec import DecodedMessage, MessageDecoder, Rejection
from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from tests.conftest import T0_NS
from tests.helpers import analytics, message

pytestmark = pytest.mark.unit

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
near_now = st.integers(min_value=T0_NS - 10**15, max_value=T0_NS + 10**14)
field_values = {
    "timestamp": near_now | values | st.just("2026-11-27T10:15:02.123456789Z"),
    "org_id": st.text(max_size=20) | values,
    "api_id": st.text(max_size=20) | values,
    "response_code": st.integers(-5, 1000) | values,
    "latency": st.fixed_dictionaries({}, optional={"total": st.integers(-(2**65), 2**65) | values}),
    "api_key": st.text(max_size=20) | values,
    "event": st.sampled_from(["RatelimitExceeded", "TokenCreated", "QuotaExceeded"]) | values,
    "key": st.text(max_size=20) | values,
    "command": st.sampled_from(["ApiUpdated", "PolicyChanged"]) | values,
    "payload": st.text(max_size=20) | values,
    "signature": st.text(max_size=70) | values,
    "algorithm": st.integers(-1, 6) | values,
    "node": st.text(max_size=20) | values,
    "interval_ms": st.integers(-10, 10**10) | values,
}
records = st.fixed_dictionaries({}, optional=field_values) | values
topics = st.sampled_from(
    [
        b"tyk.analytics",
        b"tyk.heartbeat",
        b"tyk.event.RatelimitExceeded",
        b"tyk.event.TokenCreated",
        b"tyk.notice.ApiUpdated",
        b"tyk.event.",
        b"tyk.other",
    ]
) | st.binary(max_size=30)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": st.just(1) | values,
        "node": st.sampled_from(["evil", "evil2"]) | values,
        "boot": st.integers(0, 3) | values,
        "seq": st.integers(0, 50) | values,
        "sent": near_now | values,
        "count": st.integers(-1, 5) | values,
        "enc": st.sampled_from(["msgpack", "json"]) | values,
    },
)


@st.composite
def structured_messages(draw: st.DrawFn) -> list[bytes]:
    topic = draw(topics)
    envelope = draw(envelopes)
    payload = draw(st.lists(records, max_size=5) | values)
    try:
        frames = [topic, msgpack.packb(envelope), msgpack.packb(payload)]
    except (TypeError, ValueError, OverflowError):
        frames = [topic, b"\xc1", b"\xc1"]
    extra = draw(st.sampled_from([[], [b""], None]))
    if extra is None:
        return frames[:2]
    return frames + extra


raw_messages = st.lists(st.binary(max_size=300), max_size=5)
one_message = structured_messages() | raw_messages
mixed = st.lists(one_message, min_size=1, max_size=12)


@given(raw_messages)
def test_the_decoder_returns_a_message_or_a_rejection_for_any_bytes(frames: list[bytes]) -> None:
    assert isinstance(MessageDecoder().decode(frames), DecodedMessage | Rejection)


@given(structured_messages())
def test_the_decoder_returns_a_message_or_a_rejection_for_hostile_structure(frames: list[bytes]) -> None:
    assert isinstance(MessageDecoder().decode(frames), DecodedMessage | Rejection)


def _good(seq: int) -> list[bytes]:
    return message("tyk.analytics", [analytics(T0_NS + seq, api="good")] * 3, node="good", seq=seq)


@given(mixed)
def test_the_worker_loop_survives_anything_and_keeps_every_good_record(hostile: list[Any]) -> None:
    ingestor = Ingestor(clock=lambda: T0_NS + 10**9)
    for seq, frames in enumerate(hostile):
        ingestor.ingest(_good(seq), received_ns=T0_NS)
        ingestor.ingest(frames, received_ns=T0_NS)
    batch = ingestor.take()
    tables = compute(batch)
    assert batch.analytics.frame().filter(pl.col("api_id") == "good").height == 3 * len(hostile)
    health = {r["node_id"]: r for r in tables["ingest_health"].to_pylist()}
    assert health["good"]["messages"] == len(hostile)
    assert health["good"]["rejected"] == 0
    assert sum(r["messages"] for r in health.values()) == ingestor.stats.messages
    assert sum(r["rejected"] for r in health.values()) == ingestor.stats.rejected_total
    assert "internal_error" not in ingestor.stats.rejected


def _replayed(ingestor: Ingestor, stream: list[list[bytes]], hand_overs: list[int]) -> list[bool]:
    """The stream replayed in hand-overs of the given sizes (the rest one by one)."""
    accepted: list[bool] = []
    at = 0
    for size in hand_overs:
        part = stream[at : at + size]
        accepted += ingestor.ingest_many(part, [T0_NS + 10**6 * n for n in range(at, at + len(part))])
        at += len(part)
    for n in range(at, len(stream)):
        accepted.append(ingestor.ingest_many([stream[n]], [T0_NS + 10**6 * n])[0])
    return accepted


def _analytics_message(draw: st.DrawFn, seq: int) -> list[bytes]:
    """An analytics message of good records and, sometimes, hostile ones (declined by the native
    core, judged by the reference), from one of two publishers; seqs repeat and jump."""
    good = [analytics(T0_NS + seq, api=f"api{seq % 3}", org=draw(st.sampled_from(["o1", "o2", "é"])))]
    node = draw(st.sampled_from(["gw1", "gw2"]))
    frames = message("tyk.analytics", good * draw(st.integers(0, 3)), node=node, seq=seq)
    hostile = draw(st.lists(records, max_size=2))
    if hostile:
        records_of = msgpack.unpackb(frames[2]) + hostile
        with contextlib.suppress(TypeError, ValueError, OverflowError):  # if not, the good ones alone
            frames[1:] = (
                message("tyk.analytics", [], node=node, seq=seq, count=len(records_of))[1],
                msgpack.packb(records_of),
            )
    return frames


@st.composite
def streams(draw: st.DrawFn) -> list[list[bytes]]:
    stream: list[list[bytes]] = []
    seq = 0
    for _ in range(draw(st.integers(1, 25))):
        seq = draw(st.sampled_from([seq + 1, seq + 1, seq + 1, seq, max(seq - 2, 0), seq + 3]))
        stream.append(_analytics_message(draw, seq) if draw(st.booleans()) else draw(one_message))
    return stream


@given(streams(), st.lists(st.integers(0, 9), max_size=6))
def test_a_hand_over_of_many_messages_ingests_as_each_one_through_the_reference(
    stream: list[list[bytes]], hand_overs: list[int]
) -> None:
    """Envelopes read in one native call and payload runs decoded in another (ingest_many) give
    what the reference decoder gives one message at a time: the same verdict per message, the
    same counts, the same records, rejections and messages in the same order."""
    native = Ingestor()
    reference = Ingestor()
    reference.decoder = MessageDecoder(analytics_columns=False)
    assert _replayed(native, stream, hand_overs) == _replayed(reference, stream, [])
    assert native.stats == reference.stats
    ours, theirs = native.take(), reference.take()
    assert ours.analytics.frame().equals(theirs.analytics.frame())
    for name in ("events", "notices", "heartbeats", "messages", "rejections"):
        assert getattr(ours, name).equals(getattr(theirs, name)), name
    assert native.stats == reference.stats
