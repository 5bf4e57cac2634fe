"""A firehose publisher: numbers every message and sends heartbeats.

close() says goodbye for every node (a last heartbeat with `bye`, see
docs/protocol.md): consumers then show the node as stopped, not stale.

One socket may speak for several nodes (the simulator's fleet, a bridge per
source): each node has its own boot and sequence, as the protocol requires.

Delivery: ZeroMQ PUB/SUB is at-most-once. A subscriber whose queue is full
(its high-water mark) or that joins late misses messages; the envelope's
per-(node, boot) sequence makes each such loss visible as a gap downstream.
The socket is an XPUB so the publisher can see subscriptions arrive and wait
for them instead of sleeping (ZeroMQ's slow-joiner problem).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import zmq

from pipelines.firehose.codec import MessageEncoder
from pipelines.firehose.endpoints import Endpoint, attach
from pipelines.firehose.protocol import (
    DEFAULT_HEARTBEAT_INTERVAL_MS,
    ENCODING_MSGPACK,
    MAX_MESSAGE_BYTES,
    MAX_SUBSCRIPTION_BYTES,
    TOPIC_HEARTBEAT,
)
from pipelines.security.curve import BoundEndpoints, CurveSession

log = logging.getLogger(__name__)

DEFAULT_SNDHWM = 100_000


class MessageTooLargeError(ValueError):
    """A message over the publisher's max_message_bytes: not sent, no sequence number taken.

    Subscribers refuse such a message (ZMQ_MAXMSGSIZE drops the connection that carries it),
    so sending it would lose it and whatever was queued behind it.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes over the firehose limit of {limit}")
        self.size = size
        self.limit = limit


@dataclasses.dataclass(slots=True)
class NodeSequence:
    node: str
    boot: int
    seq: int = 0
    next_heartbeat_ns: int = 0
    said_goodbye: bool = False  # its last message was a goodbye


class FirehosePublisher:
    def __init__(
        self,
        context: zmq.Context[Any],
        endpoints: Sequence[Endpoint],
        *,
        node: str | None = None,
        encoding: str = ENCODING_MSGPACK,
        sndhwm: int = DEFAULT_SNDHWM,
        heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS,
        version: str = "",
        clock: Callable[[], int] = time.time_ns,
        curve: CurveSession | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.version = version
        self.encoder = MessageEncoder(encoding)
        self.nodes: dict[str, NodeSequence] = {}
        self.default_node: NodeSequence | None = None
        if node is not None:
            self.add_node(node)
        self.socket = context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.SNDHWM, sndhwm)
        self.socket.setsockopt(zmq.LINGER, 5_000)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)  # it receives only subscriptions
        self.bound = BoundEndpoints(self.socket, curve)
        try:
            if curve is not None:
                curve.secure(self.socket, endpoints)
            self.addresses = [attach(self.socket, e) for e in endpoints]
            for endpoint, address in zip(endpoints, self.addresses, strict=True):
                if endpoint.bind:
                    self.bound.add(address)
        except BaseException:
            self.socket.close(linger=0)
            raise
        self.sent_messages = 0

    def add_node(self, node: str, boot: int | None = None) -> NodeSequence:
        """Speak for one more node; the first node added is the default."""
        state = NodeSequence(node, boot if boot is not None else self.clock() // 1_000_000)
        self.nodes[node] = state
        if self.default_node is None:
            self.default_node = state
        return state

    def _node(self, node: str | None) -> NodeSequence:
        if node is not None:
            return self.nodes[node]
        if self.default_node is None:
            msg = "publisher has no nodes; call add_node() first"
            raise ValueError(msg)
        return self.default_node

    def publish(
        self,
        topic: str,
        records: Sequence[Mapping[str, Any] | msgspec.Struct],
        *,
        node: str | None = None,
        sent: int | None = None,
    ) -> NodeSequence:
        """Send one message; returns the node state it was numbered with (seq already advanced).

        Raises MessageTooLargeError, before anything is sent, for a message over max_message_bytes.
        """
        self.bound.refresh()
        state = self._node(node)
        frames = self.encoder.encode(
            topic, node=state.node, boot=state.boot, seq=state.seq, sent=sent or self.clock(), records=records
        )
        size = sum(len(frame) for frame in frames)
        if size > self.max_message_bytes:
            raise MessageTooLargeError(size, self.max_message_bytes)
        self.socket.send_multipart(frames, copy=False)
        state.seq += 1
        state.said_goodbye = False
        self.sent_messages += 1
        return state

    def heartbeat(self, node: str | None = None, *, bye: bool = False) -> None:
        state = self._node(node)
        now = self.clock()
        record: dict[str, Any] = {
            "node": state.node,
            "timestamp": now,
            "interval_ms": self.heartbeat_interval_ms,
        }
        if self.version:
            record["version"] = self.version
        if bye:
            record["bye"] = True
        self.publish(TOPIC_HEARTBEAT, [record], node=state.node, sent=now)
        state.next_heartbeat_ns = now + self.heartbeat_interval_ms * 1_000_000
        state.said_goodbye = bye

    def maybe_heartbeat(self) -> list[str]:
        """Send every heartbeat that is due; returns the nodes that sent one."""
        now = self.clock()
        due = [s.node for s in self.nodes.values() if now >= s.next_heartbeat_ns]
        for node in due:
            self.heartbeat(node)
        return due

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Block until at least one subscription arrives (True) or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                message = self.socket.recv()
                if message[:1] == b"\x01":
                    return True
        return False

    def goodbye(self) -> None:
        """Say goodbye for every node: a planned stop, so consumers mark them stopped, not stale.

        Best effort: a goodbye that cannot be sent now (a full subscriber) is not
        waited for; the node then turns stale, as if it had crashed. Nodes whose
        last message already was a goodbye are skipped.
        """
        for node in [n for n, s in self.nodes.items() if not s.said_goodbye]:
            try:
                self.heartbeat(node, bye=True)
            except zmq.ZMQError as exc:
                log.info("goodbye not sent node=%s: %s", node, exc)
                return

    def close(self, linger_ms: int = 5_000, *, goodbye: bool = True) -> None:
        """Stop publishing; with `goodbye` (a planned stop) every node says so first."""
        if goodbye and not self.socket.closed:
            self.goodbye()
        self.socket.close(linger=linger_ms)
