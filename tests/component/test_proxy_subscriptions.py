"""What the sockets subscribers reach take from whoever subscribes (real ZeroMQ on loopback).

Found by attack: libzmq keeps every distinct subscription a peer sends, ~50 bytes per byte of
prefix, in the proxy's backend and again in every publisher behind it, until the peer leaves.
One 16 MiB subscription (the message limit then bounded it) took a proxy from 28 MiB to 1.3 GiB
and a publisher behind it from 15 MiB to 783 MiB.
The upstream observer here is a publisher's socket: what it holds is what a gateway pays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from pipelines.bridges.publishing import BridgePublisher
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.proxy import FirehoseProxy, run_in_thread
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.firehose.subscriber import FirehoseSubscriber
from tests.harness.processes import free_port

pytestmark = pytest.mark.component

LONG = b"tyk.event." + b"z" * 2_000  # a prefix of no topic: Tyk's names are tens of bytes


class Upstream:
    """A publisher's XPUB behind the proxy, tracking the subscriptions it holds."""

    def __init__(self, context: zmq.Context[Any], frontend: str) -> None:
        self.socket = context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(frontend)
        self.held: set[bytes] = set()

    def until(self, done: Any, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done(self.held):
            if time.monotonic() > deadline:
                return False
            if self.socket.poll(100):
                while self.socket.poll(0):
                    message = self.socket.recv()
                    if message[:1] == b"\x01":
                        self.held.add(message[1:])
                    elif message[:1] == b"\x00":
                        self.held.discard(message[1:])
        return True


class Flooder:
    """A peer of the backend that subscribes to whatever it likes and never reconnects."""

    def __init__(self, context: zmq.Context[Any], backend: str) -> None:
        self.socket = context.socket(zmq.XSUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RECONNECT_IVL, -1)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.socket.connect(backend)

    def subscribe(self, prefixes: Iterator[bytes]) -> None:
        for prefix in prefixes:
            self.socket.send(b"\x01" + prefix)

    def dropped(self) -> bool:
        return bool(self.monitor.poll(0))

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)


@pytest.fixture
def proxy(zmq_context: zmq.Context[Any]) -> Iterator[FirehoseProxy]:
    proxy = FirehoseProxy(
        zmq_context,
        [parse_endpoint(f"@tcp://127.0.0.1:{free_port()}")],
        [parse_endpoint(f"@tcp://127.0.0.1:{free_port()}")],
    )
    thread = run_in_thread(proxy)
    yield proxy
    proxy.stop()
    thread.join(5)
    proxy.close()


def test_a_subscription_longer_than_any_topic_drops_its_sender_and_never_goes_upstream(
    zmq_context: zmq.Context[Any], proxy: FirehoseProxy
) -> None:
    upstream = Upstream(zmq_context, proxy.frontend_addresses[0])
    flooder = Flooder(zmq_context, proxy.backend_addresses[0])
    try:
        flooder.subscribe(iter([b"tyk."]))
        assert upstream.until(lambda held: b"tyk." in held)
        flooder.subscribe(iter([LONG]))
        assert upstream.until(lambda _: flooder.dropped()), "the long subscription's sender was not dropped"
        assert upstream.until(lambda held: not held), f"still held upstream: {upstream.held}"
    finally:
        flooder.close()
        upstream.socket.close(linger=0)


def test_a_bridge_drops_a_subscriber_whose_subscription_is_longer_than_any_topic(
    zmq_context: zmq.Context[Any],
) -> None:
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{free_port()}")], node="b")
    bridge = BridgePublisher(publisher)
    flooder = Flooder(zmq_context, publisher.addresses[0])
    try:
        flooder.subscribe(iter([b"tyk."]))
        assert bridge.wait_for_subscriber("tyk.analytics", 10)
        flooder.subscribe(iter([LONG]))
        deadline = time.monotonic() + 10
        while not flooder.dropped() and time.monotonic() < deadline:
            bridge.poll_subscriptions(100)
        assert flooder.dropped(), "the long subscription's sender was not dropped"
        while bridge.subscriptions and time.monotonic() < deadline:
            bridge.poll_subscriptions(100)
        assert not bridge.subscriptions
    finally:
        flooder.close()
        bridge.close(0)


def test_subscriptions_go_upstream_until_the_last_worker_leaves_and_reach_late_publishers(
    zmq_context: zmq.Context[Any], proxy: FirehoseProxy
) -> None:
    backend = [parse_endpoint(proxy.backend_addresses[0])]
    workers = [FirehoseSubscriber(zmq_context, backend, topics=["tyk.event."]) for _ in range(2)]
    upstream = Upstream(zmq_context, proxy.frontend_addresses[0])
    try:
        assert upstream.until(lambda held: held == {b"tyk.event."})
        late = Upstream(zmq_context, proxy.frontend_addresses[0])
        assert late.until(lambda held: held == {b"tyk.event."})  # resent to a publisher that joins later
        workers.pop().close()
        assert not upstream.until(lambda held: not held, timeout_s=1.0)  # the other worker still wants it
        workers.pop().close()
        assert upstream.until(lambda held: not held)
        assert late.until(lambda held: not held)
        late.socket.close(linger=0)
    finally:
        for worker in workers:
            worker.close()
        upstream.socket.close(linger=0)
