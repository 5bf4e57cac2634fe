"""The forwarder gateways publish to and workers subscribe to (XSUB/XPUB).

Frames pass unchanged, so sequence numbers and loss accounting stay end to
end. Subscriptions flow upstream, so publishers behind the proxy see them.
The proxy originates no messages of its own (so it sends no heartbeats: the
publishers behind it do).

The frontend refuses frames over max_message_bytes (ZMQ_MAXMSGSIZE): an
oversize frame from a publisher drops that publisher's connection (it
reconnects; what it had queued behind the frame is lost and shows as a
sequence gap), so it is never forwarded to a worker. The backend receives
only subscriptions and refuses one over MAX_SUBSCRIPTION_BYTES the same way.
That bounds what one subscription costs, not how many a subscriber sends:
libzmq stores each distinct one (here, and in every publisher behind the
proxy) until its sender leaves, and offers no way to refuse one
(XPUB_MANUAL stores them too). Who may connect to the backend is the bound
(docs/operations.md, "Who may publish").

With CURVE, both sides use the same session: one own key pair, one allowlist
admitting publishers and workers alike. When keys are revoked the proxy
stops forwarding for a moment, rebinds both sides (dropping every
connection, so the revoked peer must handshake again and is refused) and
resumes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import zmq

from pipelines.firehose.endpoints import Endpoint, attach
from pipelines.firehose.protocol import MAX_MESSAGE_BYTES, MAX_SUBSCRIPTION_BYTES
from pipelines.security.curve import BoundEndpoints, CurveSession

log = logging.getLogger(__name__)


class FirehoseProxy:
    def __init__(
        self,
        context: zmq.Context[Any],
        frontend: Sequence[Endpoint],
        backend: Sequence[Endpoint],
        *,
        hwm: int = 200_000,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        curve: CurveSession | None = None,
    ) -> None:
        self.context = context
        self.curve = curve
        self.frontend = context.socket(zmq.XSUB)
        self.backend = context.socket(zmq.XPUB)
        self._bound = [BoundEndpoints(self.frontend, curve), BoundEndpoints(self.backend, curve)]
        for socket, endpoints in ((self.frontend, frontend), (self.backend, backend)):
            socket.setsockopt(zmq.RCVHWM, hwm)
            socket.setsockopt(zmq.SNDHWM, hwm)
            socket.setsockopt(zmq.LINGER, 0)
            if curve is not None:
                curve.secure(socket, endpoints)
        self.frontend.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.backend.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        self.frontend_addresses = self._attach(self.frontend, frontend, self._bound[0])
        self.backend_addresses = self._attach(self.backend, backend, self._bound[1])
        self._control_address = f"inproc://tykpulse-proxy-control-{id(self)}"
        self._control = context.socket(zmq.PAIR)
        self._control.bind(self._control_address)
        self._stopping = threading.Event()
        self._control_lock = threading.Lock()
        self._counted = [0] * 8  # statistics of the forwarding runs before the current one
        self._last = [0] * 8

    @staticmethod
    def _attach(socket: zmq.Socket[Any], endpoints: Sequence[Endpoint], bound: BoundEndpoints) -> list[str]:
        addresses = []
        for endpoint in endpoints:
            address = attach(socket, endpoint)
            addresses.append(address)
            if endpoint.bind:
                bound.add(address)
        return addresses

    def run(self) -> None:
        """Forward until stop() is called (from any thread)."""
        control = self.context.socket(zmq.PAIR)
        control.connect(self._control_address)
        log.info("proxy frontend=%s backend=%s", self.frontend_addresses, self.backend_addresses)
        try:
            while not self._stopping.is_set():
                zmq.proxy_steerable(self.frontend, self.backend, None, control)
                for bound in self._bound:
                    bound.refresh()
        finally:
            control.close(linger=0)

    def refresh(self) -> None:
        """Apply a revocation (after CurveSession.reload): interrupt forwarding to rebind."""
        if self.curve is not None:
            self._command(b"TERMINATE")

    def stop(self) -> None:
        self._stopping.set()
        self._command(b"TERMINATE")

    def _command(self, command: bytes) -> None:
        with self._control_lock:
            self._counted = [a + b for a, b in zip(self._counted, self._last, strict=True)]
            self._last = [0] * 8
            self._control.send(command)

    def statistics(self, timeout_ms: int = 1_000) -> dict[str, dict[str, float]]:
        """Frames and bytes forwarded so far, by side and direction ("frontend/in": from publishers,
        "backend/out": to workers, the */out of the other side: subscriptions going upstream).

        libzmq counts per forwarding run; a run ends on a SIGHUP rebind, so what passed between the
        last reading and a rebind is not counted (the totals never go down).
        """
        with self._control_lock:
            if self._stopping.is_set():
                return self._totals()
            self._control.send(b"STATISTICS")
            if self._control.poll(timeout_ms):
                frames = self._control.recv_multipart()
                if len(frames) == 8:
                    self._last = [int.from_bytes(f, "little") for f in frames]
            return self._totals()

    def _totals(self) -> dict[str, dict[str, float]]:
        values = [a + b for a, b in zip(self._counted, self._last, strict=True)]
        sides = ("frontend/in", "frontend/out", "backend/in", "backend/out")
        return {
            "frames": {side: values[2 * i] for i, side in enumerate(sides)},
            "bytes": {side: values[2 * i + 1] for i, side in enumerate(sides)},
        }

    @property
    def forwarding(self) -> bool:
        return not self._stopping.is_set()

    def close(self) -> None:
        for socket in (self.frontend, self.backend, self._control):
            socket.close(linger=0)


def run_in_thread(proxy: FirehoseProxy) -> threading.Thread:
    thread = threading.Thread(target=proxy.run, name="tykpulse-proxy", daemon=True)
    thread.start()
    return thread
