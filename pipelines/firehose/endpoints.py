"""Endpoint strings: `tcp://host:port` connects, `@tcp://*:port` binds.

The `@`/`>` prefixes follow CZMQ's convention, so one option can say both
where to go and which side binds. A bare endpoint uses the caller's default.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Final

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
    """Bind or connect; returns the concrete address (a bound tcp://*:0 gets its real port).

    A bound ipc:// socket file is its user's alone (0600, whatever the umask: under umask 000
    another user could connect to a proxy's backend and read the whole firehose). Processes of
    other users connect over tcp, with CURVE. (An abstract ipc://@name has no file, so no mode:
    any local process reaches it.)
    """
    try:
        if endpoint.bind:
            bind(socket, endpoint.address)
            last = socket.getsockopt(zmq.LAST_ENDPOINT)
            return last.decode() if isinstance(last, bytes) else str(last)
        socket.connect(endpoint.address)
    except zmq.ZMQError as exc:
        raise EndpointError(endpoint.address, str(exc)) from exc
    return endpoint.address


_IPC: Final = "ipc://"


def bind(socket: Any, address: str) -> None:
    """Bind `address`, an ipc:// socket file owner-only (see attach); raises zmq.ZMQError."""
    if address.startswith(_IPC):
        _bind_private(socket, address)
    else:
        socket.bind(address)


def _bind_private(socket: Any, address: str) -> None:
    # Made owner-only as it is created, then set explicitly. The umask is the process's: what
    # another thread creates in this instant is owner-only too, never looser, and still usable by
    # its owner (0o177 made its directories 0600, which chDB could not enter: inserts failed with
    # CANNOT_OPEN_FILE and left part directories it could not remove).
    previous = os.umask(0o077)
    try:
        socket.bind(address)
    finally:
        os.umask(previous)
    path = address[len(_IPC) :]
    if path and not path.startswith("@"):  # "@name": Linux's abstract namespace, no file
        os.chmod(path, 0o600)
