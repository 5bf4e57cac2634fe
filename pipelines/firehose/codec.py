"""Encode and decode firehose messages (three frames: topic, envelope, payload).

Decoding is whole-message. An analytics message goes to the native core first,
which reads its envelope and decodes its payload straight into columns
(analytics_columns.py) in one call, or declines it.
Every other payload, and one the native core declined, is decoded in one
msgspec call into slim record structs; only when that fails does the decoder
fall back to record-by-record decoding, so that one bad record rejects only
itself. That msgspec path is the reference the native one is tested against,
record for record, and it gives the rejection reasons. A
message that cannot be trusted as a whole (frames, topic, envelope, count)
is rejected as a whole. Nothing here raises on bad input: decode() returns
either a DecodedMessage or a Rejection.

The record count is checked before anything is built: a msgpack payload's
array header is read (O(1)), and a JSON payload that has to be split record
by record is first counted without building anything. A hostile payload of
millions of tiny elements (16 MiB of empty maps) therefore costs its header,
not a Python object per element.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import msgspec

from pipelines._native import analytics_envelopes
from pipelines._native import json_array_exceeds as native_json_array_exceeds
from pipelines.errors import DECODE_ERRORS
from pipelines.firehose import analytics_columns
from pipelines.firehose.analytics_columns import MessageColumns
from pipelines.firehose.protocol import (
    ENCODING_JSON,
    ENCODING_MSGPACK,
    ENCODINGS,
    MAX_MESSAGE_BYTES,
    MAX_NODE_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    MESSAGE_FRAMES,
    PROTOCOL_VERSION,
    RECORD_TYPES,
    TOPIC_ANALYTICS,
    Envelope,
    RejectReason,
    TopicKind,
    node_problem,
    parse_topic,
)
from pipelines.observe.printable import spelled_out

# msgspec raises ValidationError/DecodeError, but invalid UTF-8 inside a
# msgpack string surfaces as UnicodeDecodeError and nesting deeper than its
# limit as RecursionError; all of them mean "bad input".

_DETAIL_LIMIT: Final = 200
_TOPIC_MEMO_LIMIT: Final = 4096
# The stand-in for a message a subscriber discarded on receipt, too many frames or
# too many bytes (pipelines.firehose.subscriber): four frames, so never a valid
# message, under a topic no publisher can subscribe to; decode() turns it into the
# rejection it names, so it is counted like any other, wherever it is decoded
# (after the write-ahead log too, which logs the stand-in, not the message).
DISCARDED_TOPIC: Final = b"\x00discarded"
_ANALYTICS_TOPIC: Final = TOPIC_ANALYTICS.encode()
# (node, boot, seq, sent, count): an analytics envelope read natively (MessageDecoder.analytics_envelopes)
EnvelopeFields = tuple[str, int, int, int, int]
_DISCARD_REASONS: Final = frozenset({RejectReason.FRAME_COUNT, RejectReason.MESSAGE_TOO_LARGE})


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A refused message or record, with what is known about where it came from."""

    reason: RejectReason
    detail: str
    node: str = ""
    count: int = 1
    # (boot, seq) when the envelope was readable: the message was received, so it
    # must advance the publisher's sequence (otherwise it would show as a loss).
    position: tuple[int, int] | None = None


@dataclasses.dataclass(slots=True)
class DecodedMessage:
    """A message whose envelope and payload decoded; `records` hold the good records.

    Analytics records come as MessageColumns from a MessageDecoder with
    analytics_columns (the default), as record structs from the reference decoder.
    """

    topic: str
    kind: TopicKind
    name: str
    envelope: Envelope
    records: list[Any] | MessageColumns
    rejected: list[Rejection] = dataclasses.field(default_factory=list)

    @property
    def structs(self) -> list[Any]:
        """The records as structs, which they are for every kind but columnar analytics."""
        if isinstance(self.records, MessageColumns):
            msg = "this message's analytics records are columns"
            raise TypeError(msg)
        return self.records


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_records: int = MAX_RECORDS_PER_MESSAGE


class _Decoder(Protocol):
    def decode(self, data: bytes) -> Any: ...


_DECODER_FACTORIES: Final[dict[str, Callable[[Any], _Decoder]]] = {
    ENCODING_MSGPACK: msgspec.msgpack.Decoder,
    ENCODING_JSON: msgspec.json.Decoder,
}


def _clip(text: str) -> str:
    """A rejection's detail as logged: bounded, and whatever it quotes from the message (a
    timestamp's text, a payload's error) with its control characters spelled out."""
    return spelled_out(text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "...")


class MessageDecoder:
    """Decodes messages of every topic kind; reusable and cheap to call.

    With `analytics_columns` off it is the reference decoder: analytics records
    as structs, decoded by msgspec alone (tests compare the native path with it).
    With `native_envelope` off, an analytics message's envelope is read the way
    every other message's is, as before the native call (bench.native_core).
    """

    def __init__(
        self, limits: Limits | None = None, *, analytics_columns: bool = True, native_envelope: bool = True
    ) -> None:
        self.limits = limits or Limits()
        self.analytics_columns = analytics_columns
        self._native_message = analytics_columns and native_envelope
        self._envelope = msgspec.msgpack.Decoder(Envelope)
        self._batch: dict[str, dict[TopicKind, _Decoder]] = {
            # list[t] is built at runtime from the table of record types, hence the ignore
            enc: {kind: make(list[t]) for kind, t in RECORD_TYPES.items()}  # type: ignore[valid-type]
            for enc, make in _DECODER_FACTORIES.items()
        }
        self._single: dict[str, dict[TopicKind, _Decoder]] = {
            enc: {kind: make(t) for kind, t in RECORD_TYPES.items()}
            for enc, make in _DECODER_FACTORIES.items()
        }
        self._topics: dict[bytes, tuple[str, TopicKind, str]] = {}
        self._raw_list: dict[str, _Decoder] = {
            ENCODING_MSGPACK: msgspec.msgpack.Decoder(list[msgspec.Raw]),
            ENCODING_JSON: msgspec.json.Decoder(list[msgspec.Raw]),
        }

    def decode(self, frames: Sequence[bytes], *, native: bool = True) -> DecodedMessage | Rejection:
        """One message (its frames); `native` off: an analytics message's envelope is not tried
        natively (analytics_envelopes declined it already)."""
        if len(frames) != MESSAGE_FRAMES:
            if len(frames) == 4 and frames[0] == DISCARDED_TOPIC:
                return _discarded_rejection(frames)
            return Rejection(RejectReason.FRAME_COUNT, f"expected 3 frames, got {len(frames)}")
        topic_bytes, envelope_bytes, payload = frames
        size = len(topic_bytes) + len(envelope_bytes) + len(payload)
        if size > self.limits.max_message_bytes:
            return Rejection(RejectReason.MESSAGE_TOO_LARGE, f"{size} bytes")
        if topic_bytes == _ANALYTICS_TOPIC and native:
            # the usual message read natively: the Python calls below cost several times the
            # decoding of a small message; anything unusual is declined to them
            read = self.analytics_envelopes([frames])[0]
            if read is not None:
                columns = analytics_columns.decode(payload, read[4])
                if columns is None:  # declined: not tried natively a second time
                    return self.declined_analytics(read, payload)
                return DecodedMessage(TOPIC_ANALYTICS, TopicKind.ANALYTICS, "", _read_envelope(read), columns)
        envelope = self._decode_envelope(envelope_bytes)
        if isinstance(envelope, Rejection):
            return envelope
        parsed = self._topics.get(topic_bytes) or self._parse_topic(topic_bytes)
        if parsed is None:
            return _message_rejection(envelope, RejectReason.BAD_TOPIC, _clip(repr(topic_bytes)))
        topic, kind, name = parsed
        if kind is not TopicKind.ANALYTICS or not self.analytics_columns:
            return self._decode_payload(topic, kind, name, envelope, payload)
        if envelope.enc == ENCODING_MSGPACK:
            columns = analytics_columns.decode(payload, envelope.count)
            if columns is not None:
                return DecodedMessage(topic, kind, name, envelope, columns)
        return self._reference_analytics(envelope, payload)

    def analytics_envelopes(self, messages: Sequence[Sequence[bytes]]) -> list[EnvelopeFields | None]:
        """Per message, (node, boot, seq, sent, count) when it is an analytics message whose frames
        and envelope `decode` would accept as they are, read natively in one call for them all;
        None for any other (`decode` judges it). The payloads are left to the caller, who decodes
        them into a flush's columns (FlushColumns.append_payloads) once their sequence is checked,
        and hands any it declines to `declined_analytics`."""
        if not self._native_message:
            return [None] * len(messages)
        limits = self.limits
        return analytics_envelopes(
            messages, _ANALYTICS_TOPIC, limits.max_message_bytes, limits.max_records, MAX_NODE_BYTES
        )

    def declined_analytics(self, read: EnvelopeFields, payload: bytes) -> DecodedMessage | Rejection:
        """An analytics payload whose envelope `analytics_envelopes` read and whose records the
        native core declined: decoded the reference way (its rejection, if any, says why)."""
        return self._reference_analytics(_read_envelope(read), payload)

    def _reference_analytics(self, envelope: Envelope, payload: bytes) -> DecodedMessage | Rejection:
        """An analytics payload the native core declined, decoded the reference way into columns."""
        result = self._decode_payload(TOPIC_ANALYTICS, TopicKind.ANALYTICS, "", envelope, payload)
        if isinstance(result, DecodedMessage) and isinstance(result.records, list):
            result.records = analytics_columns.from_records(result.records)
        return result

    def _parse_topic(self, data: bytes) -> tuple[str, TopicKind, str] | None:
        """Parse, and remember good topics (a firehose has few; the memo is bounded)."""
        topic = _ascii(data)
        parsed = parse_topic(topic) if topic is not None else None
        if topic is None or parsed is None:
            return None
        if len(self._topics) >= _TOPIC_MEMO_LIMIT:
            self._topics.clear()
        self._topics[bytes(data)] = (topic, *parsed)
        return self._topics[bytes(data)]

    def _decode_envelope(self, data: bytes) -> Envelope | Rejection:
        try:
            env = self._envelope.decode(data)
        except DECODE_ERRORS as exc:
            return Rejection(RejectReason.BAD_ENVELOPE, _clip(str(exc)))
        problem = _envelope_problem(env, self.limits)
        if problem is not None:
            reason, detail = problem
            if node_problem(env.node) is not None:
                # no publisher to hold the message against: counted, sequence untouched
                return Rejection(reason, detail, "", max(env.count, 1))
            return _message_rejection(env, reason, detail)
        return env

    def _decode_payload(
        self, topic: str, kind: TopicKind, name: str, env: Envelope, payload: bytes
    ) -> DecodedMessage | Rejection:
        length = msgpack_array_length(payload) if env.enc == ENCODING_MSGPACK else None
        if length is not None and length != env.count:
            # Before decoding: the array header alone proves the mismatch.
            return _count_mismatch(env, str(length))
        try:
            records: list[Any] = self._batch[env.enc][kind].decode(payload)
        except DECODE_ERRORS:
            return self._decode_each(topic, kind, name, env, payload)
        if len(records) != env.count:
            return _count_mismatch(env, str(len(records)))
        message = DecodedMessage(topic, kind, name, env, records)
        _drop_mismatched_names(message)
        return message

    def _decode_each(
        self, topic: str, kind: TopicKind, name: str, env: Envelope, payload: bytes
    ) -> DecodedMessage | Rejection:
        if env.enc == ENCODING_JSON and json_array_exceeds(payload, env.count):
            # Splitting builds one object per element: count them first, without building.
            return _count_mismatch(env, "more")
        try:
            raws = self._raw_list[env.enc].decode(payload)
        except DECODE_ERRORS as exc:
            return _message_rejection(env, RejectReason.BAD_PAYLOAD, _clip(str(exc)))
        if len(raws) != env.count:
            return _count_mismatch(env, str(len(raws)))
        single = self._single[env.enc][kind]
        records: list[Any] = []
        message = DecodedMessage(topic, kind, name, env, records)
        for index, raw in enumerate(raws):
            try:
                records.append(single.decode(raw))
            except DECODE_ERRORS as exc:
                detail = _clip(f"record {index}: {exc}")
                message.rejected.append(Rejection(_record_reason(str(exc)), detail, env.node))
        _drop_mismatched_names(message)
        return message


def _record_reason(error: str) -> RejectReason:
    if "missing required field" in error:
        return RejectReason.MISSING_FIELD
    # a timestamp of no timestamp's shape (protocol.WireTimestamp): what it is when of any shape
    if error.endswith("at `$.timestamp`"):
        return RejectReason.BAD_TIMESTAMP
    return RejectReason.BAD_RECORD


def discarded_message(reason: RejectReason, detail: str) -> list[bytes]:
    """The stand-in a subscriber yields for a message it discarded (see DISCARDED_TOPIC)."""
    return [DISCARDED_TOPIC, reason.value.encode(), detail.encode(), b""]


def _discarded_rejection(frames: Sequence[bytes]) -> Rejection:
    named = bytes(frames[1]).decode("ascii", errors="replace")
    reason = RejectReason(named) if named in _DISCARD_REASONS else RejectReason.FRAME_COUNT
    return Rejection(reason, _clip(bytes(frames[2]).decode("utf-8", errors="replace")))


def msgpack_array_length(payload: bytes) -> int | None:
    """The element count in a msgpack array header; None when the payload is no array."""
    if not payload:
        return None
    first = payload[0]
    if 0x90 <= first <= 0x9F:  # fixarray
        return first & 0x0F
    if first == 0xDC and len(payload) >= 3:  # array 16
        return int.from_bytes(payload[1:3], "big")
    if first == 0xDD and len(payload) >= 5:  # array 32
        return int.from_bytes(payload[1:5], "big")
    return None  # not an array: decoding reports it as a bad payload


def json_array_exceeds(payload: bytes, limit: int) -> bool:
    """Whether a JSON array surely has more than `limit` top-level elements.

    Counts the commas between top-level elements and stops at the `limit`-th
    (which proves `limit + 1` elements), natively, in one pass over the bytes:
    nothing is built, and no Python runs per token (16 MiB of commas nested in
    an array took 9.5 s token by token). Malformed JSON is not judged here: the
    decoder that runs next rejects it.
    """
    return native_json_array_exceeds(payload, limit)


def _read_envelope(read: EnvelopeFields) -> Envelope:
    node, boot, seq, sent, count = read
    return Envelope(PROTOCOL_VERSION, node, boot, seq, sent, count, ENCODING_MSGPACK)


def _message_rejection(
    env: Envelope, reason: RejectReason, detail: str, count: int | None = None
) -> Rejection:
    """A whole message refused after its envelope was read.

    It counts its records, and at least 1 so that a refused message with count 0
    (or a lying count) is never invisible in `rejected`. It carries its position
    so that the consumer advances the sequence: it was received, not lost.
    """
    counted = max(env.count, 1) if count is None else count
    return Rejection(reason, detail, env.node, counted, (env.boot, env.seq))


def _count_mismatch(env: Envelope, found: str) -> Rejection:
    # counted as one: neither the envelope's count nor the payload's can be trusted
    detail = f"envelope count {env.count}, payload {found}"
    return _message_rejection(env, RejectReason.COUNT_MISMATCH, detail, count=1)


def _ascii(data: bytes) -> str | None:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return None


def _envelope_problem(env: Envelope, limits: Limits) -> tuple[RejectReason, str] | None:
    if env.v != PROTOCOL_VERSION:
        return RejectReason.UNSUPPORTED_VERSION, f"v={env.v}"
    if env.enc not in ENCODINGS:
        return RejectReason.BAD_ENCODING, _clip(f"enc={env.enc!r}")
    if not env.count >= 0:
        return RejectReason.BAD_ENVELOPE, f"count={env.count}"
    if env.count > limits.max_records:
        return RejectReason.TOO_MANY_RECORDS, f"count={env.count} > {limits.max_records}"
    node = node_problem(env.node)
    if node is not None:
        return RejectReason.BAD_ENVELOPE, node
    if env.seq < 0 or env.boot < 0:
        return RejectReason.BAD_ENVELOPE, f"seq={env.seq} boot={env.boot}"
    return None


# The record field that must repeat what the topic or envelope says, per kind.
_NAMED_BY: Final = {
    TopicKind.EVENT: ("event", RejectReason.EVENT_MISMATCH, "topic suffix"),
    TopicKind.NOTICE: ("command", RejectReason.EVENT_MISMATCH, "topic suffix"),
    TopicKind.HEARTBEAT: ("node", RejectReason.NODE_MISMATCH, "envelope node"),
}


def _drop_mismatched_names(message: DecodedMessage) -> None:
    """Every record of an event/notice message carries its topic's name; a heartbeat, its
    envelope's node (a heartbeat naming another node would keep that node live, or stop it)."""
    named_by = _NAMED_BY.get(message.kind)
    if named_by is None:
        return
    field, reason, source = named_by
    expected = message.envelope.node if message.kind is TopicKind.HEARTBEAT else message.name
    kept = [r for r in message.structs if getattr(r, field) == expected]
    dropped = len(message.records) - len(kept)
    if dropped:
        message.records = kept
        message.rejected.append(
            Rejection(
                reason,
                f"{dropped} record(s) whose {field} differs from the {source} {_clip(expected)!r}",
                message.envelope.node,
                dropped,
            )
        )


class MessageEncoder:
    """Builds the three frames of a message; used by every tykpulse publisher."""

    def __init__(self, encoding: str = ENCODING_MSGPACK) -> None:
        if encoding not in ENCODINGS:
            msg = f"unknown encoding {encoding!r}; expected one of {sorted(ENCODINGS)}"
            raise ValueError(msg)
        self.encoding = encoding
        self._envelope = msgspec.msgpack.Encoder()
        self._payload: msgspec.msgpack.Encoder | msgspec.json.Encoder = (
            msgspec.msgpack.Encoder() if encoding == ENCODING_MSGPACK else msgspec.json.Encoder()
        )

    def encode(
        self,
        topic: str,
        *,
        node: str,
        boot: int,
        seq: int,
        sent: int,
        records: Sequence[Mapping[str, Any] | msgspec.Struct],
        extra_envelope: Mapping[str, Any] | None = None,
    ) -> list[bytes]:
        envelope: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "node": node,
            "boot": boot,
            "seq": seq,
            "sent": sent,
            "count": len(records),
            "enc": self.encoding,
        }
        if extra_envelope:
            envelope.update(extra_envelope)
        return [topic.encode("ascii"), self._envelope.encode(envelope), self._payload.encode(records)]
