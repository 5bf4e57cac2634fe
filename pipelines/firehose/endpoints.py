"""Endpoint strings: `tcp://host:port` connects, `@tcp://*:port` binds.

The `@`/`>` prefixes follow CZMQ's convention, so one option can say both
where to go and which side binds. A bare endpoint uses the caller's default.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import zmq

from pipelines.errors import EndpointError

_TRANSPORTS = ("tcp://", "ipc://", "inproc://")


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    bind: bool

    def __str__(self) -> str:
        return ("@" if self.bind else "") + self.address


def parse_endpoint(text: str, *, bind_by_default: bool = False) -> Endpoint:
    bind = bind_by_default
    if text.startswith("@"):
        bind, text = True, text[1:]
    elif text.startswith(">"):
        bind, text = False, text[1:]
    if not text.startswith(_TRANSPORTS):
        raise EndpointError(text, f"must start with one of {', '.join(_TRANSPORTS)}")
    return Endpoint(text, bind)


def attach(socket: Any, endpoint: Endpoint) -> str:
    """Bind or connect; returns the concrete address (a bound tcp://*:0 gets its real port)."""
    try:
        if endpoint.bind:
            socket.bind(endpoint.address)
            last = socket.getsockopt(zmq.LAST_ENDPOINT)
            return last.decode() if isinstance(last, bytes) else str(last)
        socket.connect(endpoint.address)
    except zmq.ZMQError as exc:
        raise EndpointError(endpoint.address, str(exc)) from exc
    return endpoint.address
