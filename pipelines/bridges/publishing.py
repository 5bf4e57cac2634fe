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

Subscriptions reach the bridge through a proxy too (XSUB/XPUB forward them
upstream). What this cannot cover: a worker that is subscribed but drops at
its own receive queue (counted downstream as sequence gaps), and messages
still queued inside ZeroMQ when the process is killed (see docs/tyk.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import zmq

from pipelines.firehose.publisher import FirehosePublisher

log = logging.getLogger(__name__)

DEFAULT_SEND_TIMEOUT_MS = 1000
_SUBSCRIBE, _UNSUBSCRIBE = b"\x01", b"\x00"


class BridgePublisher:
    def __init__(
        self, publisher: FirehosePublisher, *, send_timeout_ms: int = DEFAULT_SEND_TIMEOUT_MS
    ) -> None:
        self.publisher = publisher
        self.socket = publisher.socket
        self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        self.socket.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
        self.subscriptions: set[bytes] = set()
        self.blocked_sends = 0

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
                log.info("firehose subscriber topic=%r", prefix.decode(errors="replace"))
            elif kind == _UNSUBSCRIBE:
                self.subscriptions.discard(prefix)
                log.info("firehose unsubscribed topic=%r", prefix.decode(errors="replace"))

    def has_subscriber(self, topic: str) -> bool:
        self.poll_subscriptions()
        encoded = topic.encode()
        return any(encoded.startswith(prefix) for prefix in self.subscriptions)

    def wait_for_subscriber(self, topic: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.has_subscriber(topic):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll_subscriptions(max(1, int(remaining * 1000)))
        return True

    def publish(
        self, topic: str, records: Sequence[Mapping[str, Any] | msgspec.Struct], stop: threading.Event
    ) -> bool:
        """Send one message, waiting while subscribers are full; False if `stop` was set first.

        The message's sequence number is only taken when the send succeeds, so a
        wait never leaves a gap in the envelope's sequence.
        """
        while True:
            try:
                self.publisher.publish(topic, records)
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
