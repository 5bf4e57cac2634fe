"""A firehose message as one Kafka record, and back.

The bridge stores each ZeroMQ message unchanged so a worker reading Kafka
sees exactly what a worker reading ZeroMQ sees (same envelope, same
sequence numbers, same rejections):

    key        the envelope's `node` (UTF-8); empty when the envelope cannot be read
    value      frame 3, the payload
    headers    `tyk-topic` (frame 1) and `tyk-envelope` (frame 2, the msgpack envelope
               verbatim: node, boot, seq, sent, count, enc); a message that did not
               have three frames carries `tyk-frames` = its frame count instead
    timestamp  when the bridge received the message (CreateTime, ms): the receive
               time of the ingest_health views, identical on every replay

Keying by node keeps every (node, boot) sequence in one partition, in order,
so gaps and duplicates are found downstream exactly as on the ZeroMQ hop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

import msgspec

from pipelines.firehose.protocol import Envelope

HEADER_TOPIC: Final = "tyk-topic"
HEADER_ENVELOPE: Final = "tyk-envelope"
HEADER_FRAMES: Final = "tyk-frames"

Headers = list[tuple[str, bytes]]

_ENVELOPE = msgspec.msgpack.Decoder(Envelope)


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaRecord:
    key: bytes
    value: bytes
    headers: Headers


def read_envelope(frame: bytes) -> Envelope | None:
    """The envelope of a message, or None when it does not decode (the worker rejects it)."""
    try:
        return _ENVELOPE.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None


def to_record(frames: Sequence[bytes], envelope: Envelope | None) -> KafkaRecord:
    if len(frames) != 3:
        return KafkaRecord(b"", b"", [(HEADER_FRAMES, str(len(frames)).encode())])
    topic, envelope_frame, payload = frames
    key = envelope.node.encode() if envelope is not None else b""
    return KafkaRecord(key, payload, [(HEADER_TOPIC, bytes(topic)), (HEADER_ENVELOPE, bytes(envelope_frame))])


def to_frames(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """The ZeroMQ frames a record carries; a malformed record gives frames the decoder rejects."""
    found = dict(headers)
    if HEADER_FRAMES in found:
        try:
            count = int(found[HEADER_FRAMES])
        except ValueError:
            count = 0
        return [b""] * max(0, min(count, 16))
    topic = found.get(HEADER_TOPIC)
    envelope = found.get(HEADER_ENVELOPE)
    if topic is None or envelope is None:
        return []
    return [topic, envelope, value or b""]
