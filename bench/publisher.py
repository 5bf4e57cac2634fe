"""The benchmark's publisher: resends a MessagePool as fast as it can (or at a set rate).

Run as its own process (`python -m bench.publisher ...`), as a gateway would be.
Every message gets a fresh envelope (node, boot, seq +1, sent) so the worker's
sequence tracking counts what the high-water marks drop. After the sending
period it keeps sending heartbeats for `tail_s`, so that messages dropped at the
very end are seen as gaps too. It writes what it sent as JSON and, with
`--timeline`, the (stamp time, cumulative records) of every data message, which
the latency benchmark joins with what became visible when.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from bench.workload import MessagePool, WorkloadShape
from pipelines.firehose.protocol import PROTOCOL_VERSION, TOPIC_HEARTBEAT, Envelope

_CHECK_EVERY = 32


class BenchPublisher:
    def __init__(self, pool: MessagePool, socket: zmq.Socket[Any], node: str) -> None:
        self.pool = pool
        self.socket = socket
        self.node = node
        self.boot = time.time_ns() // 1_000_000
        self.seq = 0
        self.data_messages = 0
        self.heartbeats = 0
        self.tail_heartbeats = 0
        self._encode = msgspec.msgpack.Encoder().encode
        self._heartbeat_every_ns = 1_000_000_000
        self._next_heartbeat = 0

    def _envelope(self, count: int, now: int, encoding: str) -> bytes:
        env = Envelope(PROTOCOL_VERSION, self.node, self.boot, self.seq, now, count, encoding)
        self.seq += 1
        return self._encode(env)

    def heartbeat(self, now: int) -> None:
        record = {"node": self.node, "timestamp": now, "interval_ms": 1000}
        self.socket.send_multipart(
            [TOPIC_HEARTBEAT.encode(), self._envelope(1, now, "msgpack"), self._encode([record])]
        )
        self.heartbeats += 1
        self._next_heartbeat = now + self._heartbeat_every_ns

    def run(self, duration_s: float, rate: float, *, per_message_stamps: bool) -> tuple[float, list[int]]:
        """Send for duration_s; rate is records/s (0: unpaced). Returns elapsed and stamp times."""
        pool, send, count = self.pool, self.socket.send_multipart, self.pool.shape.records_per_message
        encoding = pool.shape.encoding
        stamps: list[int] = []
        interval_ns = int(count * 1e9 / rate) if rate > 0 else 0
        started = time.time_ns()
        end = started + int(duration_s * 1e9)
        due = started
        now = started
        while now < end:
            pool.redraw_keys()
            if not per_message_stamps:
                pool.stamp_all(now)
            for index, payload in enumerate(pool.views):
                if index % _CHECK_EVERY == 0 or interval_ns:
                    now = time.time_ns()
                    if now >= end:
                        break
                    if now >= self._next_heartbeat:
                        self.heartbeat(now)
                    if interval_ns:
                        due += interval_ns
                        if due > now + 1_000_000:
                            time.sleep((due - now) / 1e9)
                            now = time.time_ns()
                if per_message_stamps:
                    pool.stamp_message(index, now)
                    stamps.append(now)
                send([pool.topics[index], self._envelope(count, now, encoding), payload])
                self.data_messages += 1
        return (time.time_ns() - started) / 1e9, stamps

    def tail(self, tail_s: float) -> None:
        """Heartbeats only, so that a worker sees every gap up to the last data message."""
        end = time.monotonic() + tail_s
        while time.monotonic() < end:
            self.heartbeat(time.time_ns())
            self.tail_heartbeats += 1
            time.sleep(0.2)


def _socket(context: zmq.Context[Any], endpoint: str, hwm: int, *, drop: bool) -> zmq.Socket[Any]:
    socket: zmq.Socket[Any] = context.socket(zmq.XPUB)
    socket.setsockopt(zmq.SNDHWM, hwm)
    # Without drops a full queue blocks the sender: the publisher then runs at the
    # rate the consumer sustains, instead of burning a core on messages it drops.
    socket.setsockopt(zmq.XPUB_NODROP, 0 if drop else 1)
    socket.setsockopt(zmq.LINGER, 2_000)
    if endpoint.startswith("@"):
        socket.bind(endpoint[1:])
    else:
        socket.connect(endpoint)
    return socket


def _wait_for_subscriber(socket: zmq.Socket[Any], timeout_s: float) -> None:
    if not socket.poll(int(timeout_s * 1000), zmq.POLLIN):
        msg = f"no subscriber within {timeout_s} s"
        raise SystemExit(msg)
    socket.recv()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True, help="connect to it, or bind with a leading @")
    parser.add_argument("--records-per-message", type=int, default=100)
    parser.add_argument("--keys", type=int, default=30_000)
    parser.add_argument("--encoding", default="msgpack")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=0.0, help="records/s; 0 sends as fast as possible")
    parser.add_argument("--hwm", type=int, default=1_000)
    parser.add_argument("--node", default="bench-0")
    parser.add_argument(
        "--drop", action="store_true", help="drop at the HWM (PUB/SUB's default) instead of waiting"
    )
    parser.add_argument("--tail", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeline", type=Path, help="write per-message stamps here (.npy)")
    args = parser.parse_args(argv)
    shape = WorkloadShape(args.records_per_message, args.keys, args.encoding, seed=args.seed)
    pool = MessagePool(shape)
    context: zmq.Context[Any] = zmq.Context()
    socket = _socket(context, args.endpoint, args.hwm, drop=args.drop)
    try:
        _wait_for_subscriber(socket, 120)
        publisher = BenchPublisher(pool, socket, args.node)
        elapsed, stamps = publisher.run(args.duration, args.rate, per_message_stamps=bool(args.timeline))
        publisher.tail(args.tail)
        tail_ended = time.time()
    finally:
        socket.close()
        context.term()
    if args.timeline:
        np.save(args.timeline, np.array(stamps, dtype=np.int64))
    report = {
        "node": args.node,
        "data_messages": publisher.data_messages,
        "records": publisher.data_messages * shape.records_per_message,
        "messages": publisher.seq,
        "heartbeats": publisher.heartbeats,
        "tail_heartbeats": publisher.tail_heartbeats,
        "elapsed_s": elapsed,
        "tail_ended_unix_s": tail_ended,
        "records_per_message": shape.records_per_message,
    }
    args.out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
