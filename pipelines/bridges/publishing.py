"""The bridges' side of the firehose: publish only when someone listens, wait rather than drop.

A plain PUB socket discards a message when nobody is subscribed and when a
subscriber's queue is full (its high-water mark). For a bridge that has just
taken records out of Tyk's Redis, both would be silent loss, so:

- the socket is an XPUB whose subscriptions are tracked (`has_subscriber`):
  the Redis bridge leaves records in Redis while no worker subscribes, and the
  webhook receiver answers 503 so Tyk logs the failure;
- `ZMQ_XPUB_NODROP` is set: at the high-water mark a send waits (up to
  `send_timeout_ms`, then retries while the bridge runs) instead of dropping.
  A slow worker slows the bridge down; Redis holds the backlog.
- records are sent in messages under the workers' message limit
  (`--max-message-bytes`): a worker refuses a larger message and ZeroMQ drops
  the connection that carried it, so one oversized record would lose every
  good record batched with it. A record over the limit on its own is counted
  (`tykpulse_records_too_large_total`) and logged, never sent.

Subscriptions reach the bridge through a proxy too (XSUB/XPUB forward them
upstream). What this cannot cover: a worker that is subscribed but drops at
its own receive queue (counted downstream as sequence gaps), and messages
still queued inside ZeroMQ when the process is killed (see docs/tyk.md).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import zmq

from pipelines.firehose.publisher import FirehosePublisher, MessageTooLargeError
from pipelines.observe.printable import spelled_out
from pipelines.observe.throttle import LogThrottle

log = logging.getLogger(__name__)

DEFAULT_SEND_TIMEOUT_MS = 1000
_LOGGED_PREFIX_CHARS = 128
_SUBSCRIBE, _UNSUBSCRIBE = b"\x01", b"\x00"


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """What publish() did with its records."""

    records: int  # published
    too_large: int  # not published: alone over the firehose's message limit
    stopped: bool  # `stop` was set before the rest could be sent


class BridgePublisher:
    def __init__(
        self, publisher: FirehosePublisher, *, send_timeout_ms: int = DEFAULT_SEND_TIMEOUT_MS
    ) -> None:
        self.publisher = publisher
        self.socket = publisher.socket
        self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        self.socket.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
        self.subscriptions: set[bytes] = set()
        # whoever may subscribe chooses how many subscriptions arrive: not a line each
        self._log_throttle = LogThrottle()
        self.blocked_sends = 0
        self.too_large_records = 0

    def poll_subscriptions(self, timeout_ms: int = 0) -> None:
        """Apply every (un)subscription that arrived; wait up to timeout_ms for the first."""
        if timeout_ms and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return
        while True:
            try:
                message = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            kind, prefix = message[:1], bytes(message[1:])
            if kind == _SUBSCRIBE:
                self.subscriptions.add(prefix)
                self._log_change("firehose subscriber", prefix)
            elif kind == _UNSUBSCRIBE:
                self.subscriptions.discard(prefix)
                self._log_change("firehose unsubscribed", prefix)

    def _log_change(self, what: str, prefix: bytes) -> None:
        held = self._log_throttle.allow(what)
        if held is not None:
            log.info(
                "%s topic=%r subscriptions=%d (not logged since the last line: %d)",
                what,
                spelled_out(prefix.decode(errors="replace")[:_LOGGED_PREFIX_CHARS]),
                len(self.subscriptions),
                held,
            )

    def has_subscriber(self, topic: str) -> bool:
        """Whether a subscription matches `topic`: a lookup per prefix of the topic, so however many
        subscriptions a subscriber sent, this costs the topic's length (it runs before every send)."""
        self.poll_subscriptions()
        encoded = topic.encode()
        subscriptions = self.subscriptions
        return any(encoded[:end] in subscriptions for end in range(len(encoded) + 1))

    def wait_for_subscriber(self, topic: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.has_subscriber(topic):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll_subscriptions(max(1, int(remaining * 1000)))
        return True

    def publish(
        self,
        topic: str,
        records: Sequence[Mapping[str, Any] | msgspec.Struct],
        stop: threading.Event,
        *,
        node: str | None = None,
    ) -> Sent:
        """Send `records` as one message, or as several where one would exceed the firehose's
        message limit (split in halves, order kept); waits while subscribers are full.

        A record that alone exceeds the limit is not sent: counted and logged (a subscriber would
        refuse it, and ZeroMQ would drop its connection with everything queued behind it). A
        message's sequence number is only taken when its send succeeds, so neither a wait nor a
        split leaves a gap in the envelope's sequence.
        """
        sent = too_large = 0
        pending = [records]
        while pending:
            part = pending.pop()
            try:
                if not self._send(topic, part, stop, node):
                    return Sent(sent, too_large, stopped=True)
            except MessageTooLargeError as exc:
                if len(part) > 1:
                    half = len(part) // 2
                    pending += [part[half:], part[:half]]
                else:
                    too_large += 1
                    self._too_large(topic, exc)
                continue
            sent += len(part)
        return Sent(sent, too_large, stopped=False)

    def _too_large(self, topic: str, exc: MessageTooLargeError) -> None:
        self.too_large_records += 1
        if self.too_large_records == 1 or self.too_large_records % 1000 == 0:
            log.error(
                "record not published topic=%s: alone it makes a message of %d bytes, over the firehose "
                "limit of %d (--max-message-bytes) total=%d",
                topic,
                exc.size,
                exc.limit,
                self.too_large_records,
            )

    def _send(
        self,
        topic: str,
        records: Sequence[Mapping[str, Any] | msgspec.Struct],
        stop: threading.Event,
        node: str | None,
    ) -> bool:
        """Send one message, waiting while subscribers are full; False if `stop` was set first."""
        while True:
            try:
                self.publisher.publish(topic, records, node=node)
            except zmq.Again:
                self.blocked_sends += 1
                if self.blocked_sends == 1 or self.blocked_sends % 60 == 0:
                    log.warning(
                        "firehose subscribers are full; waiting (blocked_sends=%d)", self.blocked_sends
                    )
                self.poll_subscriptions()
                if stop.is_set():
                    return False
            else:
                return True

    def maybe_heartbeat(self) -> None:
        """Heartbeats that are due; one that cannot be sent now is retried on the next call."""
        try:
            self.publisher.maybe_heartbeat()
        except zmq.Again:
            self.blocked_sends += 1

    def close(self, linger_ms: int = 5_000) -> None:
        self.publisher.close(linger_ms)
