"""Throughput of the Tyk bridges: decoding, Redis -> firehose, webhooks -> firehose.

    .venv/bin/python -m bench.tyk_bridge                 # all three, default sizes
    .venv/bin/python -m bench.tyk_bridge --only decode --records 200000

decode   records/s of decode + conversion to the firehose record, one core, per fixture and encoding
redis    `tykpulse bridge tyk` as a process: a real redis-server preloaded with N msgpack records
         (Tyk Pump's fixture 001), a ZeroMQ SUB counting records; time from the first record
         received to the last
webhook  `tykpulse bridge tyk-webhook` as a process: N posts over 64 keep-alive connections
         (pipelined 20 deep), answered-requests/s, and every event counted on a ZeroMQ SUB
The machine is shared and noisy: run a few times and read the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import redis
import zmq

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.tyk_protobuf import decode_protobuf
from pipelines.bridges.tyk_records import FirehoseConverter, decode_msgpack
from tests.harness.processes import free_port, stop_process
from tests.harness.redis import RedisServer
from tests.tyk_webhooks import go_time_string, render

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tyk" / "analytics"
CLI = [sys.executable, "-m", "pipelines.cli.main", "--log-level", "warning"]


def bench_decode(records: int) -> None:
    converter = FirehoseConverter(KeyDigester(b"bench"))
    for name in ("000", "001"):
        for ext, decode in (("msgpack", decode_msgpack), ("protobuf", decode_protobuf)):
            element = (FIXTURES / f"{name}.{ext}").read_bytes()
            start = time.perf_counter()
            for _ in range(records):
                converter.convert(decode(element))
            rate = records / (time.perf_counter() - start)
            print(f"decode  fixture={name} {ext:8s} {len(element):5d} B  {rate:>10,.0f} records/s")


class Counter:
    def __init__(self, context: zmq.Context[Any], port: int, topic: bytes) -> None:
        self.socket = context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.socket.bind(f"tcp://127.0.0.1:{port}")
        self.records = 0
        self.first = self.last = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.socket.poll(20):
                frames = self.socket.recv_multipart()
                self.first = self.first or time.perf_counter()
                self.records += msgspec.msgpack.decode(frames[1])["count"]
                self.last = time.perf_counter()
        self.socket.close(0)

    def wait(self, records: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.records < records and time.monotonic() < deadline:
            time.sleep(0.02)
        self.stop.set()
        self.thread.join()


def start_bridge(args: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    """A bridge run from `workdir`, so its default key file (data/ there) is not the checkout's."""
    return subprocess.Popen([*CLI, "bridge", *args], cwd=workdir)


def bench_redis(records: int, batch: int, workdir: Path) -> None:
    element = (FIXTURES / "001.msgpack").read_bytes()
    context: zmq.Context[Any] = zmq.Context()
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        for start in range(0, records, 10_000):
            client.rpush("analytics-tyk-system-analytics", *[element] * min(10_000, records - start))
        port = free_port()
        counter = Counter(context, port, b"tyk.analytics")
        flags = ["--drain-batch", str(batch), "--no-notifications"]
        bridge = start_bridge(
            ["tyk", "--redis", server.url, "--publish", f"tcp://127.0.0.1:{port}", *flags], workdir
        )
        counter.wait(records, 300)
        stop_process(bridge, 30)
        client.close()
    context.term()
    elapsed = counter.last - counter.first
    print(
        f"redis   {counter.records:,} of {records:,} records, batch={batch}: "
        f"{counter.records / elapsed:,.0f} records/s"
    )


async def _post_all(port: int, bodies: list[bytes], connections: int, depth: int) -> int:
    answered = 0

    async def one(chunk: list[bytes]) -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for start in range(0, len(chunk), depth):
            group = chunk[start : start + depth]
            writer.write(b"".join(group))
            await writer.drain()
            for _ in group:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                answered += head.startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(one(bodies[i::connections]) for i in range(connections)))
    return answered


def bench_webhook(posts: int, workdir: Path) -> None:
    context: zmq.Context[Any] = zmq.Context()
    zmq_port, http_port = free_port(), free_port()
    counter = Counter(context, zmq_port, b"tyk.event.")
    bridge = start_bridge(
        ["tyk-webhook", "--listen", f"127.0.0.1:{http_port}", "--publish", f"tcp://127.0.0.1:{zmq_port}"],
        workdir,
    )
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    now = time.time_ns()
    requests = []
    for i in range(posts):
        body = render(
            "RatelimitExceeded", go_time_string(now + i), key=f"key-{i % 5000}", path="/x", origin="10.0.0.1"
        )
        payload = body.encode()
        head = f"POST /tyk/events?org_id=o&api_id=a HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n"
        head += "\r\n"
        requests.append(head.encode() + payload)
    start = time.perf_counter()
    answered = asyncio.run(_post_all(http_port, requests, 64, 20))
    elapsed = time.perf_counter() - start
    counter.wait(posts, 60)
    stop_process(bridge, 30)
    context.term()
    print(
        f"webhook {answered:,} of {posts:,} answered 200 in {elapsed:.2f}s: "
        f"{answered / elapsed:,.0f} posts/s; "
        f"{counter.records:,} events on the firehose"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["decode", "redis", "webhook"])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--posts", type=int, default=20_000)
    args = parser.parse_args()
    if args.only in (None, "decode"):
        bench_decode(args.records)
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        if args.only in (None, "redis"):
            bench_redis(args.records * 2, args.batch, Path(tmp))
        if args.only in (None, "webhook"):
            bench_webhook(args.posts, Path(tmp))


if __name__ == "__main__":
    main()
