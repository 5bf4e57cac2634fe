"""A firehose subscriber: one SUB socket per endpoint, read through one poller.

The receive high-water mark bounds memory: when the consumer falls behind,
ZeroMQ drops whole messages at the HWM and the sequence tracker reports them
as lost. It is set high by default (messages, not bytes) so that flush pauses
do not drop; see docs/operations.md for sizing.

Every socket refuses frames above the message-size limit (ZMQ_MAXMSGSIZE), so
an oversize frame is never buffered, logged or decoded. libzmq enforces it by
dropping the connection that sent the frame, silently: the peer's other
messages queued behind it are lost too (seen as a sequence gap). A monitor
socket is the only way to see that: the subscriber counts every disconnect
(`disconnects`) and logs them, throttled. libzmq does not reconnect a
*connecting* socket after such a protocol error (it does after an ordinary
drop, and says so with a CONNECT_RETRIED or CONNECT_DELAYED event), so for an
endpoint it connects to that shows no retry within RETRY_GRACE_S of its drop,
the subscriber disconnects and connects it again itself (libzmq ignores a
second connect to an endpoint it still lists). An endpoint libzmq is
reconnecting is left alone: disconnecting it then aborted the process
(fq.cpp `!_more`). A publisher that connects to a bound endpoint reconnects on
its own.

That limit is per frame. A message is read frame by frame (what recv_multipart
does, at the same cost), and one with more frames than the protocol's three, or
more bytes in all than the limit, is read to its end without keeping the rest
(`discarded` counts them): never logged or decoded whole. A small stand-in
(codec.discarded_message) takes its place, which the decoder counts as a
frame_count or message_too_large rejection, like any other. libzmq itself still
holds a multipart message whole before its first frame can be read.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import zmq
from zmq.utils.monitor import recv_monitor_message

from pipelines.firehose.codec import discarded_message
from pipelines.firehose.endpoints import Endpoint, attach, parse_endpoint
from pipelines.firehose.protocol import MAX_MESSAGE_BYTES, MESSAGE_FRAMES, SUBSCRIBE_ALL, RejectReason
from pipelines.observe.throttle import LogThrottle
from pipelines.security.curve import BoundEndpoints, CurveSession

if TYPE_CHECKING:
    from pipelines.settings import FirehoseSettings

log = logging.getLogger(__name__)

DEFAULT_RCVHWM = 200_000
# A fixed kernel receive buffer per connection (SO_RCVBUF through ZMQ_RCVBUF) instead of TCP's
# autotuning: libzmq's I/O thread then reads more per wakeup, ~20 % less of its CPU per record at
# full rate (0.26-0.29 -> 0.22 us, bench.thread_cpu). The kernel caps it at net.core.rmem_max.
DEFAULT_RCVBUF_BYTES = 4 << 20
# libzmq schedules its own reconnect at once (ZMQ_RECONNECT_IVL, 100 ms by default)
RETRY_GRACE_S = 1.0
_NOBLOCK: Final = zmq.NOBLOCK
_RCVMORE: Final = zmq.RCVMORE
_WATCHED_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECT_DELAYED


class FirehoseSubscriber:
    def __init__(
        self,
        context: zmq.Context[Any],
        endpoints: Sequence[Endpoint],
        *,
        topics: Sequence[str] = (SUBSCRIBE_ALL,),
        rcvhwm: int = DEFAULT_RCVHWM,
        rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        curve: CurveSession | None = None,
    ) -> None:
        self.curve = curve
        self.max_message_bytes = max_message_bytes
        self.bound: list[BoundEndpoints] = []
        self.sockets: list[zmq.Socket[Any]] = []
        self.poller = zmq.Poller()
        self.addresses: list[str] = []
        self.disconnects = 0
        # messages discarded on receipt (too many frames or bytes); each yields a stand-in
        self.discarded = 0
        # monitor socket -> (its SUB socket, the addresses that socket connects to)
        self._monitors: dict[zmq.Socket[Any], tuple[zmq.Socket[Any], list[str]]] = {}
        # (socket, address) dropped, and when to connect again unless libzmq retries first
        self._dropped: dict[tuple[zmq.Socket[Any], str], float] = {}
        self._throttle = LogThrottle()
        try:
            for endpoint in endpoints:
                self._open(context, endpoint, topics, rcvhwm, rcvbuf_bytes, max_message_bytes)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_settings(
        cls, context: zmq.Context[Any], settings: FirehoseSettings, curve: CurveSession | None = None
    ) -> FirehoseSubscriber:
        """The subscriber a command's firehose options describe (the worker's and the Kafka bridge's)."""
        return cls(
            context,
            [parse_endpoint(e) for e in settings.firehose],
            topics=settings.topics,
            rcvhwm=settings.rcvhwm,
            rcvbuf_bytes=settings.rcvbuf_bytes,
            max_message_bytes=settings.max_message_bytes,
            curve=curve,
        )

    def _open(
        self,
        context: zmq.Context[Any],
        endpoint: Endpoint,
        topics: Sequence[str],
        rcvhwm: int,
        rcvbuf_bytes: int,
        max_message_bytes: int,
    ) -> None:
        socket = context.socket(zmq.SUB)
        self.sockets.append(socket)
        socket.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf_bytes > 0:
            socket.setsockopt(zmq.RCVBUF, rcvbuf_bytes)
        socket.setsockopt(zmq.LINGER, 0)
        if max_message_bytes > 0:
            # libzmq drops the connection of a peer that sends a larger frame; the
            # decoder still rejects oversized messages that arrive in several frames.
            socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        for topic in topics:
            socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if self.curve is not None:
            self.curve.secure(socket, [endpoint])
        connected: list[str] = []
        monitor = None
        if self.curve is None:
            # With CURVE, a session ZAP refused must stay refused (and libzmq aborted when
            # such a socket was disconnected and connected again mid-handshake): only
            # plain sockets are watched and re-connected after a drop.
            monitor = socket.get_monitor_socket(_WATCHED_EVENTS)
            self._monitors[monitor] = (socket, connected)
        address = attach(socket, endpoint)
        self.addresses.append(address)
        if not endpoint.bind:
            connected.append(address)
        if endpoint.bind:
            bound = BoundEndpoints(socket, self.curve)
            bound.add(address)
            self.bound.append(bound)
        self.poller.register(socket, zmq.POLLIN)
        if monitor is not None:
            self.poller.register(monitor, zmq.POLLIN)

    def receive(self, timeout_ms: int, max_messages: int = 10_000) -> Iterator[list[bytes]]:
        """Yield messages that are ready, waiting at most timeout_ms for the first."""
        for bound in self.bound:
            bound.refresh()
        ready = dict(self.poller.poll(timeout_ms))
        for monitor in [m for m in ready if m in self._monitors]:
            del ready[monitor]
            self._on_events(monitor)
        self._reconnect_abandoned()
        received = 0
        while ready and received < max_messages:
            for socket in list(ready):
                try:
                    yield self._recv(socket)
                    received += 1
                except zmq.Again:
                    del ready[socket]

    def _recv(self, socket: zmq.Socket[Any]) -> list[bytes]:
        """One message (zmq.Again when none is ready), bounded in frames and in bytes."""
        recv, option = socket.recv, socket.getsockopt  # bound once: this is per message
        frame = recv(_NOBLOCK)
        frames = [frame]
        size = len(frame)
        limit = self.max_message_bytes
        while option(_RCVMORE):
            if len(frames) == MESSAGE_FRAMES:
                return self._discard(socket, RejectReason.FRAME_COUNT, len(frames), size)
            frame = recv(_NOBLOCK)
            frames.append(frame)
            size += len(frame)
            if 0 < limit < size:
                return self._discard(socket, RejectReason.MESSAGE_TOO_LARGE, len(frames), size)
        return frames  # one frame alone is bounded by MAXMSGSIZE

    def _discard(self, socket: zmq.Socket[Any], reason: RejectReason, count: int, size: int) -> list[bytes]:
        """Read the rest of the message without keeping it; its stand-in for the decoder to count."""
        while socket.getsockopt(zmq.RCVMORE):
            size += len(socket.recv(zmq.NOBLOCK, copy=False))  # a Frame, not copied into bytes
            count += 1
        self.discarded += 1
        detail = (
            f"{count} frames, {size} bytes, discarded on receipt "
            f"(at most {MESSAGE_FRAMES} frames and {self.max_message_bytes} bytes)"
        )
        return discarded_message(reason, detail)

    def _on_events(self, monitor: zmq.Socket[Any]) -> None:
        socket, connected = self._monitors[monitor]
        while monitor.poll(0):
            event = recv_monitor_message(monitor)
            endpoint = event["endpoint"].decode(errors="replace")
            if event["event"] != zmq.EVENT_DISCONNECTED:
                self._dropped.pop((socket, endpoint), None)  # libzmq reconnects by itself
                continue
            self._count_disconnect(endpoint)
            if endpoint in connected:
                self._dropped[(socket, endpoint)] = time.monotonic() + RETRY_GRACE_S

    def _count_disconnect(self, endpoint: str) -> None:
        self.disconnects += 1
        held = self._throttle.allow(("disconnect", endpoint))
        if held is not None:
            log.warning(
                "firehose peer disconnected endpoint=%s disconnects=%d (a frame over "
                "max_message_bytes=%d drops its sender's connection; or the peer went away) "
                "not_logged=%d",
                endpoint,
                self.disconnects,
                self.max_message_bytes,
                held,
            )

    def _reconnect_abandoned(self) -> None:
        """Connect again where libzmq gave up (a protocol error such as an oversize frame)."""
        now = time.monotonic()
        for key, deadline in list(self._dropped.items()):
            if deadline <= now:
                del self._dropped[key]
                socket, address = key
                log.info("firehose connecting again endpoint=%s (libzmq did not retry)", address)
                with contextlib.suppress(zmq.ZMQError):  # already gone: connect below restores it
                    socket.disconnect(address)
                socket.connect(address)

    def close(self) -> None:
        for monitor, (socket, _) in self._monitors.items():
            socket.disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()
        self._dropped.clear()
        for socket in self.sockets:
            socket.close(linger=0)
        self.sockets.clear()
