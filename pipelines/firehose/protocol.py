"""The firehose protocol, version 1 (see docs/protocol.md, mirrored from PROTOCOL.md).

Everything a publisher and a consumer must agree on lives here: topics, the
envelope, the record shapes a consumer reads, limits and rejection reasons.
The record structs name only the fields tykpulse's rollups need; msgspec skips
every other field without building Python objects for it, which is what makes
decoding fast. Unknown fields are ignored, as the protocol requires.
"""

from __future__ import annotations

import enum
import unicodedata
from typing import Annotated, Any, Final

import msgspec

PROTOCOL_VERSION: Final = 1

TOPIC_ANALYTICS: Final = "tyk.analytics"
TOPIC_HEARTBEAT: Final = "tyk.heartbeat"
EVENT_PREFIX: Final = "tyk.event."
NOTICE_PREFIX: Final = "tyk.notice."
SUBSCRIBE_ALL: Final = "tyk."

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
# A subscription is a topic prefix (`tyk.notice.` and a command name: tens of bytes). libzmq keeps
# every distinct one a subscriber sends, ~50 bytes of memory per byte, so the sockets subscribers
# reach refuse longer ones (ZMQ_MAXMSGSIZE: the connection that sent it is dropped). Handshake
# frames pass the same limit: CURVE's INITIATE is ~300 bytes.
MAX_SUBSCRIPTION_BYTES: Final = 1024
MESSAGE_FRAMES: Final = 3  # topic, envelope, payload
MAX_RECORDS_PER_MESSAGE: Final = 100_000
MAX_NODE_BYTES: Final = 128
# Unicode categories a name must not hold: controls (C0, C1, DEL), format characters (zero-width,
# soft hyphen, bidi marks, overrides and isolates, BOM, tags), surrogates, private use, unassigned,
# line and paragraph separators. Combining marks stay: they are how many scripts spell letters.
_UNPRINTABLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
MAX_FUTURE_NS: Final = 24 * 3600 * 1_000_000_000
MAX_PAST_NS: Final = 7 * 24 * 3600 * 1_000_000_000
DEFAULT_HEARTBEAT_INTERVAL_MS: Final = 1000
MAX_HEARTBEAT_INTERVAL_MS: Final = 3_600_000
MAX_ID_CHARS: Final = 1_024
MAX_KEY_CHARS: Final = 8_192


def node_problem(node: str) -> str | None:
    """Why `node` cannot name a publisher, or None: 1..MAX_NODE_BYTES bytes of printable text.

    A node name is a key (sequences, liveness, Kafka records, the publishers rollup) and it is
    printed: in logs, `tykpulse status`, metric and alert labels. A newline in it forged log lines,
    ESC sequences restyled terminals; tykpulse's own names and Tyk's node ids are plain text.
    """
    if not node or len(node.encode()) > MAX_NODE_BYTES:
        return f"node must be 1..{MAX_NODE_BYTES} bytes"
    if not (node.isascii() and node.isprintable()) and any(
        unicodedata.category(c) in _UNPRINTABLE_CATEGORIES for c in node
    ):
        return "node holds control or invisible characters"
    return None


# Bounds that keep hostile numbers and strings out of the columns: every int a
# rollup reads fits int64 (numpy arrays never overflow), identifiers that become
# ClickHouse keys are bounded. A record outside them is rejected as bad_record.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
NonNegativeInt64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Identifier = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]
KeyText = Annotated[str, msgspec.Meta(max_length=MAX_KEY_CHARS)]

ENCODING_MSGPACK: Final = "msgpack"
ENCODING_JSON: Final = "json"
ENCODINGS: Final = frozenset({ENCODING_MSGPACK, ENCODING_JSON})

# Gateway events that tykpulse rolls up (Tyk's strings exactly: note the lowercase
# "l" in RatelimitExceeded).
RATE_LIMIT_EVENTS: Final = (
    "RatelimitExceeded",
    "QuotaExceeded",
    "OrgRateLimitExceeded",
    "OrgQuotaExceeded",
)
TOKEN_EVENTS: Final = ("TokenCreated", "TokenUpdated", "TokenDeleted")


class TopicKind(enum.Enum):
    ANALYTICS = "analytics"
    EVENT = "event"
    NOTICE = "notice"
    HEARTBEAT = "heartbeat"

    # Members are singletons compared by identity; Enum's own __hash__ is Python
    # code, and kinds are dictionary keys on the per-message path.
    __hash__ = object.__hash__


class RejectReason(enum.StrEnum):
    """Why a message or a record was refused. The values are metric labels."""

    FRAME_COUNT = "frame_count"
    MESSAGE_TOO_LARGE = "message_too_large"
    BAD_TOPIC = "bad_topic"
    BAD_ENVELOPE = "bad_envelope"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_ENCODING = "bad_encoding"
    TOO_MANY_RECORDS = "too_many_records"
    COUNT_MISMATCH = "count_mismatch"
    BAD_PAYLOAD = "bad_payload"
    BAD_RECORD = "bad_record"
    MISSING_FIELD = "missing_field"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    PAST_TIMESTAMP = "past_timestamp"
    EVENT_MISMATCH = "event_mismatch"
    NODE_MISMATCH = "node_mismatch"
    BAD_SIGNATURE = "bad_signature"
    DUPLICATE = "duplicate"
    INTERNAL_ERROR = "internal_error"


class Envelope(msgspec.Struct, frozen=True):
    """Frame 2. Keys a version-1 consumer does not know are ignored."""

    v: int
    node: str
    boot: NonNegativeInt64
    seq: NonNegativeInt64
    sent: Int64
    count: Int64
    enc: str


# The record structs below are the hot path of a worker: every field named here
# is decoded (and a Python object built) for every record, so a field is named
# only when a rollup reads it; msgspec skips the rest (api_key, latency.upstream,
# ...) without building anything. They are gc=False: they never hold other
# containers, so they cannot form cycles, and millions of them in a flush's
# buffer would otherwise make every collection of the cyclic GC walk them all.


class Latency(msgspec.Struct, gc=False):
    total: Int64 = 0


# Timestamps are typed Any because the protocol allows three forms (RFC 3339
# string, msgpack timestamp extension, int nanoseconds) and msgspec cannot put
# str and datetime in one union; pipelines.firehose.timestamps normalises them.
# Messages are decoded into the RECORD_TYPES below, whose timestamps are narrower.


class AnalyticsRecord(msgspec.Struct, gc=False):
    """The fields of Tyk's AnalyticsRecord (JSON names) that rollups read."""

    timestamp: Any
    org_id: Identifier
    api_id: Identifier
    response_code: Annotated[int, msgspec.Meta(ge=-1, le=999)]
    latency: Latency = msgspec.field(default_factory=Latency)


class EventRecord(msgspec.Struct, gc=False):
    """A gateway event; `key` is the raw key as Tyk's metadata gives it."""

    event: Identifier
    timestamp: Any
    org_id: Identifier
    api_id: Identifier = ""
    key: KeyText = ""


class NoticeRecord(msgspec.Struct, gc=False):
    """A cluster notification, Tyk's Notification fields plus a timestamp."""

    command: Identifier
    timestamp: Any
    payload: str = ""
    signature: KeyText = ""
    algorithm: Int64 = 0


class HeartbeatRecord(msgspec.Struct, gc=False):
    node: Annotated[str, msgspec.Meta(max_length=MAX_NODE_BYTES)]
    timestamp: Any
    interval_ms: Annotated[int, msgspec.Meta(gt=0, le=MAX_HEARTBEAT_INTERVAL_MS)] = (
        DEFAULT_HEARTBEAT_INTERVAL_MS
    )
    version: Identifier = ""
    # A goodbye: the publisher's last message before a planned stop (docs/protocol.md).
    # An extension of version 1: consumers that do not know the field ignore it.
    bye: bool = False


# What the decoders read a timestamp as: only the forms a timestamp can take, so that a value of
# any other shape is refused unbuilt. Decoded as Any, whatever a sender nests there is built (one
# 16 MiB record whose timestamp was an array of empty maps took a worker 1.2 GB and 5 s). The
# extension stays an Ext (a datetime cannot join str in a union): timestamps.to_ns reads it.
WireTimestamp = int | float | bool | None | str | msgspec.msgpack.Ext


class _WireAnalyticsRecord(AnalyticsRecord, gc=False):
    timestamp: WireTimestamp


class _WireEventRecord(EventRecord, gc=False):
    timestamp: WireTimestamp


class _WireNoticeRecord(NoticeRecord, gc=False):
    timestamp: WireTimestamp


class _WireHeartbeatRecord(HeartbeatRecord, gc=False):
    timestamp: WireTimestamp


# The types messages are decoded into: the records above, their timestamps as WireTimestamp.
RECORD_TYPES: Final[dict[TopicKind, type[msgspec.Struct]]] = {
    TopicKind.ANALYTICS: _WireAnalyticsRecord,
    TopicKind.EVENT: _WireEventRecord,
    TopicKind.NOTICE: _WireNoticeRecord,
    TopicKind.HEARTBEAT: _WireHeartbeatRecord,
}


def parse_topic(topic: str) -> tuple[TopicKind, str] | None:
    """Split a topic into its kind and suffix (event name or command); None if unknown."""
    if topic == TOPIC_ANALYTICS:
        return TopicKind.ANALYTICS, ""
    if topic == TOPIC_HEARTBEAT:
        return TopicKind.HEARTBEAT, ""
    for prefix, kind in ((EVENT_PREFIX, TopicKind.EVENT), (NOTICE_PREFIX, TopicKind.NOTICE)):
        if topic.startswith(prefix):
            suffix = topic[len(prefix) :]
            if suffix and suffix.isascii() and suffix.isidentifier():
                return kind, suffix
            return None
    return None


def event_topic(name: str) -> str:
    return EVENT_PREFIX + name


def notice_topic(command: str) -> str:
    return NOTICE_PREFIX + command
