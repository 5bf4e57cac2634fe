"""Tyk cluster notifications (Redis pub/sub `tyk.cluster.notifications`) as firehose notices.

Tyk publishes `{"command", "payload", "signature", "algorithm"}` as JSON text
(fact sheet §4.2). Each becomes one `tyk.notice.<command>` record with those
four fields exactly as received (the signature still verifies: a worker with
the node secret checks `sha256(command + payload + node_secret)`), plus
`timestamp`: Tyk's notifications carry none, so the bridge stamps the time it
received the message.

Delivery: Redis pub/sub is at-most-once. A notification published while the
bridge is disconnected from Redis is never seen; nothing can recover it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Final

import msgspec
import redis
import redis.client

from pipelines.firehose.protocol import notice_topic, parse_topic

log = logging.getLogger(__name__)

NOTIFICATION_CHANNEL: Final = "tyk.cluster.notifications"


class _Notification(msgspec.Struct):
    command: str
    payload: str = ""
    signature: str = ""
    algorithm: int = 0


_DECODER: Final = msgspec.json.Decoder(_Notification)


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    topic: str
    record: dict[str, Any]


def notice_from_wire(data: bytes, received_ns: int) -> Notice | str:
    """The firehose notice for one pub/sub message, or the reason it cannot be one."""
    try:
        note = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"not a Tyk notification: {exc}"
    topic = notice_topic(note.command)
    if parse_topic(topic) is None:
        return f"command {note.command[:64]!r} cannot name a topic"
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
        # redis-py's pubsub() is not annotated; PubSub itself is
        self.pubsub: redis.client.PubSub = client.pubsub(  # type: ignore[no-untyped-call]
            ignore_subscribe_messages=True
        )
        self.pubsub.subscribe(channel)

    def poll(self, timeout_s: float, limit: int = 10_000) -> list[bytes]:
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
