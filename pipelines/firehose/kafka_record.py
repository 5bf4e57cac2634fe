"""A firehose message as one Kafka record, and back.

The bridge stores each ZeroMQ message unchanged so a worker reading Kafka
sees exactly what a worker reading ZeroMQ sees (same envelope, same
sequence numbers, same rejections):

    key        the envelope's `node` (UTF-8); empty when the envelope cannot be read
    value      frame 3, the payload
    headers    `tyk-topic` (frame 1) and `tyk-envelope` (frame 2, the msgpack envelope
               verbatim: node, boot, seq, sent, count, enc)
    timestamp  when the bridge received the message (CreateTime, ms): the receive
               time of the ingest_health views, identical on every replay

Keying by node keeps every (node, boot) sequence in one partition, in order,
so gaps and duplicates are found downstream exactly as on the ZeroMQ hop.

A bundle carries several messages of one node, received together, in one
record: header `tyk-bundle` (how many) and as value a msgpack array of
messages, each an array of its frames (bin), in the order they arrived. A
Kafka consumer pays a fixed cost per record (Faust ~0.2 ms of Python per
event, bench.kafka_workers), so bundles keep a worker's cost per firehose
record, not per message; small messages (one event each) would otherwise
bound a worker at a few thousand records/s. A bundle's timestamp is when
its last message was received. Unbundled single-message records stay valid.

A message that does not have three frames travels as a bundle of one (empty
key), its frames as received: the worker rejects it for the reason it would
on the ZeroMQ hop, e.g. a subscriber's stand-in for a message it discarded
(too many bytes or frames) still counts as `message_too_large` or
`frame_count`. (Bridges before this carried only the frame count, header
`tyk-frames`, which is still read.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated, Final

import msgspec

from pipelines.errors import DECODE_ERRORS
from pipelines.firehose.codec import discarded_message
from pipelines.firehose.protocol import Envelope, RejectReason, node_problem

HEADER_TOPIC: Final = "tyk-topic"
HEADER_ENVELOPE: Final = "tyk-envelope"
HEADER_FRAMES: Final = "tyk-frames"
HEADER_BUNDLE: Final = "tyk-bundle"

Headers = list[tuple[str, bytes]]

# A bundle's bounds, checked from the msgpack array headers before anything is built: a 66 KB
# lz4 record unpacking to 16 M empty messages took 3.2 GB and the consumer group's heartbeat.
MAX_BUNDLE_MESSAGES: Final = 65_536
MAX_FRAMES: Final = 16  # a message's frames as received (more than 3 is rejected downstream)

_ENVELOPE = msgspec.msgpack.Decoder(Envelope)
_BUNDLE_ENCODER = msgspec.msgpack.Encoder()
_BUNDLE = msgspec.msgpack.Decoder(
    Annotated[
        list[Annotated[list[bytes], msgspec.Meta(max_length=MAX_FRAMES)]],
        msgspec.Meta(max_length=MAX_BUNDLE_MESSAGES),
    ]
)


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaRecord:
    key: bytes
    value: bytes
    headers: Headers


def read_envelope(frame: bytes) -> Envelope | None:
    """The envelope of a message, or None when it does not decode or its node is out of bounds
    (the worker rejects it; a node of any length would otherwise key Kafka records and the
    bridge's sequence tracking)."""
    try:
        envelope = _ENVELOPE.decode(frame)
    except DECODE_ERRORS:  # RecursionError included
        return None
    if node_problem(envelope.node) is not None:
        return None
    return envelope


def to_record(frames: Sequence[bytes], envelope: Envelope | None) -> KafkaRecord:
    if len(frames) != 3:
        return _bundle(b"", [frames])
    topic, envelope_frame, payload = frames
    headers = [(HEADER_TOPIC, bytes(topic)), (HEADER_ENVELOPE, bytes(envelope_frame))]
    return KafkaRecord(_key(frames, envelope), payload, headers)


def to_frames(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """The ZeroMQ frames a record carries; a malformed record gives frames the decoder rejects."""
    found = dict(headers)
    if HEADER_FRAMES in found:
        try:
            count = int(found[HEADER_FRAMES])
        except (TypeError, ValueError):  # TypeError: a null header value (Kafka allows them)
            count = 0
        return [b""] * max(0, min(count, MAX_FRAMES))
    topic = found.get(HEADER_TOPIC)
    envelope = found.get(HEADER_ENVELOPE)
    if topic is None or envelope is None:
        return []
    return [topic, envelope, value or b""]


Message = tuple[Sequence[bytes], Envelope | None]


def to_records(
    messages: Sequence[Message], max_messages: int, max_bytes: int
) -> list[tuple[KafkaRecord, list[int]]]:
    """Records for messages received together, each with the indexes of the messages it carries.

    Messages of one node go into bundles of at most `max_messages` messages and
    `max_bytes` bytes of frames (a bigger message gets a record of its own), in
    arrival order; records come in the order of their first message.
    """
    groups: list[list[int]] = []
    open_groups: dict[bytes, tuple[list[int], int]] = {}
    for index, (frames, envelope) in enumerate(messages):
        key = _key(frames, envelope)
        size = sum(len(frame) for frame in frames)
        group, used = open_groups.get(key, (None, 0))
        if group is None or len(group) >= max_messages or used + size > max_bytes:
            group, used = [], 0
            groups.append(group)
        group.append(index)
        open_groups[key] = (group, used + size)
    return [(_group_record(messages, group), group) for group in groups]


def _key(frames: Sequence[bytes], envelope: Envelope | None) -> bytes:
    return envelope.node.encode() if envelope is not None and len(frames) == 3 else b""


def _group_record(messages: Sequence[Message], group: list[int]) -> KafkaRecord:
    frames, envelope = messages[group[0]]
    if len(group) == 1:
        return to_record(frames, envelope)
    return _bundle(_key(frames, envelope), [messages[i][0] for i in group])


def _bundle(key: bytes, messages: Sequence[Sequence[bytes]]) -> KafkaRecord:
    value = _BUNDLE_ENCODER.encode([list(frames) for frames in messages])
    return KafkaRecord(key, value, [(HEADER_BUNDLE, str(len(messages)).encode())])


def messages_of(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> list[list[bytes]]:
    """The firehose messages (their frames) a record carries: one, or a bundle's.

    A bundle that does not decode gives one empty message, which the decoder
    rejects (and counts): its content cannot be trusted, not even its count.
    """
    if any(name == HEADER_BUNDLE for name, _ in headers):
        try:
            bundle = _BUNDLE.decode(value or b"")
        except DECODE_ERRORS as exc:
            if "of length <=" in str(exc):  # over its bounds
                return [discarded_message(RejectReason.MESSAGE_TOO_LARGE, f"bundle: {exc}"[:200])]
            return [[]]
        return bundle or [[]]
    return [to_frames(value, headers)]
