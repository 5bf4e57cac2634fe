"""A firehose message through a Kafka record and back: the worker rejects what it would on ZeroMQ."""

from __future__ import annotations

import pytest

from pipelines.firehose.codec import MessageDecoder, Rejection, discarded_message
from pipelines.firehose.kafka_record import (
    HEADER_FRAMES,
    messages_of,
    read_envelope,
    to_record,
    to_records,
)
from pipelines.firehose.protocol import RejectReason
from tests.conftest import T0_NS
from tests.helpers import analytics, message

pytestmark = pytest.mark.unit

DECODER = MessageDecoder()


def through_kafka(messages: list[list[bytes]], bundle: int = 1) -> list[list[bytes]]:
    """The messages as a worker reading the records `bridge kafka` produces would see them."""
    records = to_records(
        [(m, read_envelope(m[1]) if len(m) == 3 else None) for m in messages], bundle, 1 << 20
    )
    return [message for record, _ in records for message in messages_of(record.value, record.headers)]


def reasons(messages: list[list[bytes]]) -> list[RejectReason | None]:
    """Each message's rejection reason as the worker decodes it (None: decoded)."""
    out: list[RejectReason | None] = []
    for frames in messages:
        result = DECODER.decode(frames)
        out.append(result.reason if isinstance(result, Rejection) else None)
    return out


@pytest.mark.parametrize("bundle", [1, 64])
def test_every_message_arrives_as_sent_bundled_or_not(bundle: int) -> None:
    good = message("tyk.analytics", [analytics(T0_NS)])
    too_large = discarded_message(
        RejectReason.MESSAGE_TOO_LARGE, "1 frame, 20971520 bytes, discarded on receipt"
    )
    too_many = discarded_message(RejectReason.FRAME_COUNT, "5 frames, 40 bytes, discarded on receipt")
    messages = [good, too_large, [b"tyk.analytics", b"\x80"], too_many, [], good]

    carried = through_kafka(messages, bundle)

    # bundles group a node's messages (the others, without an envelope, under the empty key)
    assert sorted(carried) == sorted(messages)
    assert [m for m in carried if m == good] == [good, good]
    # the reasons the worker counts are those of the ZeroMQ hop (the stand-ins' own, not frame_count)
    assert sorted(map(str, reasons(carried))) == sorted(map(str, reasons(messages)))
    assert reasons([m for m in carried if m == too_large]) == [RejectReason.MESSAGE_TOO_LARGE]


def test_a_record_from_an_older_bridge_still_gives_a_frame_count_rejection() -> None:
    # bridges before one-message bundles carried a message without three frames as its count only
    (message,) = messages_of(b"", [(HEADER_FRAMES, b"4")])
    assert reasons([message]) == [RejectReason.FRAME_COUNT]


@pytest.mark.parametrize("node", ["", "n" * 129, "\u00e9" * 65, "two\nlines", "esc\x1b[2J"])
def test_an_envelope_whose_node_is_out_of_bounds_keys_nothing(node: str) -> None:
    # Found by attack: bridge kafka tracked (and keyed Kafka records by) nodes of any length.
    frames = message("tyk.analytics", [analytics(T0_NS)], node=node)
    assert read_envelope(frames[1]) is None
    assert to_record(frames, None).key == b""
    assert read_envelope(message("tyk.analytics", [], node="n" * 128)[1]) is not None
