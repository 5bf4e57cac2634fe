"""A firehose subscriber: one SUB socket per endpoint, read through one poller.

The receive high-water mark bounds memory: when the consumer falls behind,
ZeroMQ drops whole messages at the HWM and the sequence tracker reports them
as lost. It is set high by default (messages, not bytes) so that flush pauses
do not drop; see docs/operations.md for sizing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import zmq

from pipelines.firehose.endpoints import Endpoint, attach
from pipelines.firehose.protocol import SUBSCRIBE_ALL
from pipelines.security.curve import BoundEndpoints, CurveSession

DEFAULT_RCVHWM = 200_000


class FirehoseSubscriber:
    def __init__(
        self,
        context: zmq.Context[Any],
        endpoints: Sequence[Endpoint],
        *,
        topics: Sequence[str] = (SUBSCRIBE_ALL,),
        rcvhwm: int = DEFAULT_RCVHWM,
        max_message_bytes: int = -1,
        curve: CurveSession | None = None,
    ) -> None:
        self.curve = curve
        self.bound: list[BoundEndpoints] = []
        self.sockets: list[zmq.Socket[Any]] = []
        self.poller = zmq.Poller()
        self.addresses: list[str] = []
        try:
            for endpoint in endpoints:
                self._open(context, endpoint, topics, rcvhwm, max_message_bytes)
        except BaseException:
            self.close()
            raise

    def _open(
        self,
        context: zmq.Context[Any],
        endpoint: Endpoint,
        topics: Sequence[str],
        rcvhwm: int,
        max_message_bytes: int,
    ) -> None:
        socket = context.socket(zmq.SUB)
        self.sockets.append(socket)
        socket.setsockopt(zmq.RCVHWM, rcvhwm)
        socket.setsockopt(zmq.LINGER, 0)
        if max_message_bytes > 0:
            # libzmq drops the connection of a peer that sends a larger frame; the
            # decoder still rejects oversized messages that arrive in several frames.
            socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        for topic in topics:
            socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if self.curve is not None:
            self.curve.secure(socket, [endpoint])
        address = attach(socket, endpoint)
        self.addresses.append(address)
        if endpoint.bind:
            bound = BoundEndpoints(socket, self.curve)
            bound.add(address)
            self.bound.append(bound)
        self.poller.register(socket, zmq.POLLIN)

    def receive(self, timeout_ms: int, max_messages: int = 10_000) -> Iterator[list[bytes]]:
        """Yield messages that are ready, waiting at most timeout_ms for the first."""
        for bound in self.bound:
            bound.refresh()
        ready = dict(self.poller.poll(timeout_ms))
        received = 0
        while ready and received < max_messages:
            for socket in list(ready):
                try:
                    yield socket.recv_multipart(zmq.NOBLOCK)
                    received += 1
                except zmq.Again:
                    del ready[socket]

    def close(self) -> None:
        for socket in self.sockets:
            socket.close(linger=0)
        self.sockets.clear()
