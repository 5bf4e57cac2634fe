"""The forwarder gateways publish to and workers subscribe to (XSUB/XPUB).

Frames pass unchanged, so sequence numbers and loss accounting stay end to
end. Subscriptions flow upstream, so publishers behind the proxy see them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import zmq

from pipelines.firehose.endpoints import Endpoint, attach

log = logging.getLogger(__name__)


class FirehoseProxy:
    def __init__(
        self,
        context: zmq.Context[Any],
        frontend: Sequence[Endpoint],
        backend: Sequence[Endpoint],
        *,
        hwm: int = 200_000,
    ) -> None:
        self.context = context
        self.frontend = context.socket(zmq.XSUB)
        self.backend = context.socket(zmq.XPUB)
        for socket in (self.frontend, self.backend):
            socket.setsockopt(zmq.RCVHWM, hwm)
            socket.setsockopt(zmq.SNDHWM, hwm)
            socket.setsockopt(zmq.LINGER, 0)
        self.frontend_addresses = [attach(self.frontend, e) for e in frontend]
        self.backend_addresses = [attach(self.backend, e) for e in backend]
        self._control_address = f"inproc://tykpulse-proxy-control-{id(self)}"
        self._control = context.socket(zmq.PAIR)
        self._control.bind(self._control_address)

    def run(self) -> None:
        """Forward until stop() is called (from any thread)."""
        control = self.context.socket(zmq.PAIR)
        control.connect(self._control_address)
        log.info("proxy frontend=%s backend=%s", self.frontend_addresses, self.backend_addresses)
        try:
            zmq.proxy_steerable(self.frontend, self.backend, None, control)
        finally:
            control.close(linger=0)

    def stop(self) -> None:
        self._control.send(b"TERMINATE")

    def close(self) -> None:
        for socket in (self.frontend, self.backend, self._control):
            socket.close(linger=0)


def run_in_thread(proxy: FirehoseProxy) -> threading.Thread:
    thread = threading.Thread(target=proxy.run, name="tykpulse-proxy", daemon=True)
    thread.start()
    return thread
