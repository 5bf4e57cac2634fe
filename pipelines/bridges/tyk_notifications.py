"""Tyk cluster notifications (Redis pub/sub `tyk.cluster.notifications`) as firehose notices.

Tyk publishes `{"command", "payload", "signature", "algorithm"}` as JSON text
(fact sheet §4.2). Each becomes one `tyk.notice.<command>` record with those
four fields as received, plus `timestamp`: Tyk's notifications carry none, so
the bridge stamps the time it received the message.

The exceptions are the payloads that carry credentials, which must not cross
the firehose or reach a WAL or the archive (fact sheet §4.3, §4.5):
- `KeySpaceUpdateNotification` lists raw API keys (and OAuth tokens, client
  secrets); `UserKeyReset` is one such entry (`<oldKey>.<newKey>:UserKeyReset`,
  the MDCB user's key). Their entries keep Tyk's shape (comma-separated,
  `:`-suffixed) with every key replaced by its `kd1:` digest (KeyDigester, the
  same value analytics and events carry for that key).
- `NoticeConfigUpdated` carries a whole tyk.conf (the gateway's secret, the
  node secret, storage passwords) and `NoticeGatewayConfigResponse` a gateway's
  configuration: its `Configuration` is replaced by its digest (two pushes of
  the same configuration still compare equal); the addressing fields stay.
That changes the signed text, so Tyk's signature no longer matches. With the
node secret, the bridge checks the gateway's algorithm-5 signature first and
signs the scrubbed payload the same way, so a worker with the node secret
still verifies it; otherwise (no secret, a bad or RSA signature) the signature
is blanked and such a worker rejects the notice as bad_signature, as it would
an unverifiable one.

Delivery: Redis pub/sub is at-most-once. A notification published while the
bridge is disconnected from Redis is never seen; nothing can recover it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Final

import msgspec
import redis
import redis.client

from pipelines.bridges.int_ranges import Int64
from pipelines.bridges.key_digest import KEY_DIGEST_PREFIX, KeyDigester
from pipelines.errors import DECODE_ERRORS
from pipelines.firehose.protocol import notice_topic, parse_topic
from pipelines.security.notices import ALGORITHM_SHA256, sha256_signature_valid, sign_sha256

log = logging.getLogger(__name__)

NOTIFICATION_CHANNEL: Final = "tyk.cluster.notifications"
# Notifications read from the subscription at once (more wait for the next poll)
POLL_LIMIT: Final = 10_000
KEYSPACE_COMMAND: Final = "KeySpaceUpdateNotification"

# The trailing words of §4.5 entries: what happened, not whose key. Kept so the
# entry still says what changed; every other segment may be a credential.
_ENTRY_ACTIONS: Final = frozenset(
    {
        "hashed",
        "resetQuota",
        "CertificateAdded",
        "CertificateRemoved",
        "oAuthRevokeToken",
        "oAuthRevokeAccessToken",
        "oAuthRevokeRefreshToken",
        "revoke_all_tokens",
        "OauthClientAdded",
        "OauthClientUpdated",
        "OauthClientRemoved",
        "DeleteAPICache",
        "InvalidateJWKSCacheForAPI",
        "UserKeyReset",
    }
)
_DIGEST_TAG: Final = KEY_DIGEST_PREFIX.rstrip(":")


class _Notification(msgspec.Struct):
    command: str
    payload: str = ""
    signature: str = ""
    algorithm: Int64 = 0  # unbounded, 10**22 decoded and then failed the firehose's msgpack at publish


_DECODER: Final = msgspec.json.Decoder(_Notification)
_JSON_DECODER: Final = msgspec.json.Decoder()
_JSON_ENCODER: Final = msgspec.json.Encoder()
_CONFIGURATION: Final = "Configuration"


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    topic: str
    record: dict[str, Any]


def _segments(entry: str) -> list[str]:
    """`entry` split on `:`, with an already digested key (`kd1:<hex>`) kept whole (chained bridges)."""
    parts = entry.split(":")
    merged: list[str] = []
    i = 0
    while i < len(parts):
        if parts[i] == _DIGEST_TAG and i + 1 < len(parts):
            merged.append(f"{KEY_DIGEST_PREFIX}{parts[i + 1]}")
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    return merged


def _digest_entry(entry: str, digester: KeyDigester) -> str:
    segments = _segments(entry)
    action = segments.pop() if len(segments) > 1 and segments[-1] in _ENTRY_ACTIONS else None
    digested = [digester.digest(s) for s in segments]
    if action is not None:
        digested.append(action)
    return ":".join(digested)


def digest_keyspace_payload(payload: str, digester: KeyDigester) -> str:
    """A KeySpaceUpdateNotification payload with every key, token and secret digested, shape kept."""
    if not payload:
        return payload
    return ",".join(_digest_entry(entry, digester) for entry in payload.split(","))


def digest_configuration(payload: str, digester: KeyDigester) -> str:
    """A payload `{"Configuration": {...}, ...}` with the configuration replaced by its digest.

    A payload that is not a JSON object is digested whole: whatever it holds, it was meant to
    hold a configuration.
    """
    if not payload:
        return payload
    try:
        obj = _JSON_DECODER.decode(payload)
    except DECODE_ERRORS:  # RecursionError included
        return digester.digest_text(payload)
    if not isinstance(obj, dict):
        return digester.digest_text(payload)
    if _CONFIGURATION not in obj:
        return payload
    value = obj[_CONFIGURATION]
    text = value if isinstance(value, str) else _JSON_ENCODER.encode(value).decode()
    obj[_CONFIGURATION] = digester.digest_text(text)
    return _JSON_ENCODER.encode(obj).decode()


# The commands whose payload carries credentials, and how the bridge scrubs each (module docstring).
_SCRUBBERS: Final[dict[str, Callable[[str, KeyDigester], str]]] = {
    KEYSPACE_COMMAND: digest_keyspace_payload,
    "UserKeyReset": digest_keyspace_payload,
    "NoticeConfigUpdated": digest_configuration,
    "NoticeGatewayConfigResponse": digest_configuration,
}


def _resigned(note: _Notification, payload: str, node_secret: str) -> tuple[str, int]:
    """(signature, algorithm) for the digested `payload`: re-signed only if the gateway's signature held."""
    held = note.algorithm == ALGORITHM_SHA256 and bool(node_secret)
    if held and sha256_signature_valid(note.command, note.payload, node_secret, note.signature):
        return sign_sha256(note.command, payload, node_secret), ALGORITHM_SHA256
    return "", note.algorithm


def notice_from_wire(
    data: bytes, received_ns: int, digester: KeyDigester, node_secret: str = ""
) -> Notice | str:
    """The firehose notice for one pub/sub message, or the reason it cannot be one.

    `digester` replaces the credentials of the payloads that carry them; `node_secret`
    (Tyk's) lets the scrubbed notice keep a valid signature (module docstring).
    """
    try:
        note = _DECODER.decode(data)
    except DECODE_ERRORS as exc:  # RecursionError included: JSON nested thousands deep
        return f"not a Tyk notification: {exc}"
    topic = notice_topic(note.command)
    if parse_topic(topic) is None:
        return f"command {note.command[:64]!r} cannot name a topic"
    scrub = _SCRUBBERS.get(note.command)
    if scrub is not None:
        payload = scrub(note.payload, digester)
        if payload != note.payload:
            signature, algorithm = _resigned(note, payload, node_secret)
            note = _Notification(note.command, payload, signature, algorithm)
    record = {
        "command": note.command,
        "payload": note.payload,
        "signature": note.signature,
        "algorithm": note.algorithm,
        "timestamp": received_ns,
    }
    return Notice(topic, record)


class NotificationListener:
    """A pub/sub subscription; `poll` doubles as the bridge's idle wait."""

    def __init__(self, client: redis.Redis, channel: str = NOTIFICATION_CHANNEL) -> None:
        self.channel = channel
        self.pubsub: redis.client.PubSub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)

    def poll(self, timeout_s: float, limit: int = POLL_LIMIT) -> list[bytes]:
        """Messages that arrived; waits up to `timeout_s` for the first one."""
        messages: list[bytes] = []
        message = self.pubsub.get_message(timeout=timeout_s)
        while message is not None:
            if message.get("type") == "message" and isinstance(message.get("data"), bytes):
                messages.append(message["data"])
            if len(messages) >= limit:
                break
            message = self.pubsub.get_message(timeout=0)
        return messages

    def close(self) -> None:
        self.pubsub.close()
