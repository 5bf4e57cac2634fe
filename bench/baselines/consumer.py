"""The shared shell of the baseline consumers: a bound SUB socket, a loop, a report.

A consumer process binds, prints `ready`, receives until SIGTERM, keeps
receiving until the firehose has been quiet for `quiet_s` (the publisher's
trailing heartbeats make every dropped message a visible gap), calls
`finish()` and writes its JSON report (the benchmark measures CPU and memory from outside).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Protocol

import zmq

from pipelines.cli.signals import stop_on_signals
from pipelines.firehose.protocol import MAX_MESSAGE_BYTES
from pipelines.firehose.sequence import SequenceTracker

_POLL_MS = 50
_BURST = 1_000


class Consumer(Protocol):
    def on_message(self, frames: list[bytes]) -> None: ...

    def on_tick(self) -> None: ...

    def finish(self) -> dict[str, Any]: ...


class LossCounter:
    """Messages and records accepted, messages lost (sequence gaps)."""

    def __init__(self) -> None:
        self.tracker = SequenceTracker()
        self.messages = 0
        self.lost = 0

    def observe(self, node: str, boot: int, seq: int) -> None:
        self.messages += 1
        self.lost += self.tracker.observe(node, boot, seq).lost


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--endpoint", required=True, help="bind here (tcp://127.0.0.1:PORT)")
    parser.add_argument("--hwm", type=int, default=1_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quiet", type=float, default=1.0)
    return parser


def serve(consumer: Consumer, args: argparse.Namespace) -> None:
    stop = stop_on_signals()
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, args.hwm)
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # as the worker: oversize frames cost nothing
    socket.setsockopt(zmq.SUBSCRIBE, b"tyk.")
    socket.bind(args.endpoint)
    print("ready", flush=True)
    try:
        quiet_since = time.monotonic()
        while True:
            got = _receive(socket, consumer)
            if got:
                quiet_since = time.monotonic()
            consumer.on_tick()
            # quiet means a poll found nothing, not merely that time passed in a slow flush
            if stop.is_set() and not got and time.monotonic() - quiet_since >= args.quiet:
                break
    finally:
        socket.close(linger=0)
        context.term()
    args.out.write_text(json.dumps(consumer.finish()))


def _receive(socket: zmq.Socket[Any], consumer: Consumer) -> bool:
    if not socket.poll(_POLL_MS, zmq.POLLIN):
        return False
    on_message, recv = consumer.on_message, socket.recv_multipart
    for _ in range(_BURST):
        try:
            on_message(recv(zmq.NOBLOCK))
        except zmq.Again:
            break
    return True
