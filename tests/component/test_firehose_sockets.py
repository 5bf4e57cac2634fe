"""Publisher, subscriber and proxy over real ZeroMQ tcp on loopback (readiness checks, no sleeps)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from pipelines.errors import EndpointError
from pipelines.firehose.codec import DecodedMessage, MessageDecoder
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.proxy import FirehoseProxy, run_in_thread
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.firehose.subscriber import FirehoseSubscriber
from pipelines.ingest import Ingestor
from pipelines.wal.writer import WalWriter
from tests.conftest import T0_NS
from tests.harness.processes import free_port
from tests.helpers import analytics

pytestmark = pytest.mark.component


def collect(subscriber: FirehoseSubscriber, expected: int, timeout_s: float = 10.0) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(subscriber.receive(100))
    return got


# In-process tests bind the publisher and connect the subscriber: within one process, an
# (X)PUB connecting to a bound SUB never received the subscription here (libzmq 4.3.5 via
# pyzmq 27); across processes both directions work and the integration tests use SUB-binds.


def test_publisher_to_subscriber_over_tcp(zmq_context: zmq.Context[Any], port: int) -> None:
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="gw1")
    subscriber = FirehoseSubscriber(zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{port}")])
    try:
        assert publisher.wait_for_subscribers(10)
        for i in range(50):
            publisher.publish("tyk.analytics", [analytics(T0_NS + i)] * 3)
        got = collect(subscriber, 50)
    finally:
        publisher.close(0)
        subscriber.close()
    decoder = MessageDecoder()
    decoded = [decoder.decode(f) for f in got]
    assert all(isinstance(d, DecodedMessage) for d in decoded)
    assert [d.envelope.seq for d in decoded if isinstance(d, DecodedMessage)] == list(range(50))


def test_topic_prefix_filters(zmq_context: zmq.Context[Any], port: int) -> None:
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="gw1")
    subscriber = FirehoseSubscriber(
        zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{port}")], topics=["tyk.event."]
    )
    try:
        assert publisher.wait_for_subscribers(10)
        publisher.publish("tyk.analytics", [analytics(T0_NS)])
        publisher.publish(
            "tyk.event.QuotaExceeded", [{"event": "QuotaExceeded", "timestamp": T0_NS, "org_id": "o"}]
        )
        got = collect(subscriber, 1)
        assert collect(subscriber, 1, timeout_s=0.3) == []
    finally:
        publisher.close(0)
        subscriber.close()
    assert [f[0] for f in got] == [b"tyk.event.QuotaExceeded"]


def test_proxy_forwards_frames_unchanged_and_subscriptions_upstream(zmq_context: zmq.Context[Any]) -> None:
    front, back = free_port(), free_port()
    proxy = FirehoseProxy(
        zmq_context,
        [parse_endpoint(f"@tcp://127.0.0.1:{front}")],
        [parse_endpoint(f"@tcp://127.0.0.1:{back}")],
    )
    thread = run_in_thread(proxy)
    subscriber = FirehoseSubscriber(zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{back}")])
    publishers = [
        FirehosePublisher(zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{front}")], node=f"gw{i}")
        for i in range(3)
    ]
    try:
        for publisher in publishers:
            assert publisher.wait_for_subscribers(10), "subscription did not flow upstream through the proxy"
        sent = []
        for publisher in publishers:
            for i in range(20):
                frames = publisher.encoder.encode(
                    "tyk.analytics",
                    node=publisher.default_node.node if publisher.default_node else "",
                    boot=1,
                    seq=i,
                    sent=T0_NS,
                    records=[analytics(T0_NS)],
                )
                publisher.socket.send_multipart(frames)
                sent.append(frames)
        got = collect(subscriber, 60)
    finally:
        for publisher in publishers:
            publisher.close(0)
        subscriber.close()
        proxy.stop()
        thread.join(5)
        proxy.close()
    assert sorted(map(tuple, got)) == sorted(map(tuple, sent))


def test_heartbeats_are_due_every_interval(zmq_context: zmq.Context[Any], port: int) -> None:
    now = [T0_NS]
    publisher = FirehosePublisher(
        zmq_context,
        [parse_endpoint(f"@tcp://127.0.0.1:{port}")],
        node="gw1",
        heartbeat_interval_ms=1000,
        clock=lambda: now[0],
    )
    try:
        assert publisher.maybe_heartbeat() == ["gw1"]
        assert publisher.maybe_heartbeat() == []
        now[0] += 999_000_000
        assert publisher.maybe_heartbeat() == []
        now[0] += 1_000_000
        assert publisher.maybe_heartbeat() == ["gw1"]
        assert publisher.nodes["gw1"].seq == 2
    finally:
        publisher.close(0)


def test_bad_endpoints_fail_with_a_clear_error(zmq_context: zmq.Context[Any]) -> None:
    with pytest.raises(EndpointError, match="must start with"):
        parse_endpoint("localhost:5556")
    port = free_port()
    first = FirehoseSubscriber(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")])
    try:
        with pytest.raises(EndpointError, match=r"[Aa]ddress already in use"):
            FirehoseSubscriber(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")])
    finally:
        first.close()


def test_subscriber_waits_without_busy_looping(zmq_context: zmq.Context[Any], port: int) -> None:
    subscriber = FirehoseSubscriber(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")])
    started = time.monotonic()
    try:
        assert list(subscriber.receive(200)) == []
    finally:
        subscriber.close()
    assert time.monotonic() - started >= 0.15
    assert threading.active_count() >= 1


# -- oversize frames: refused by the socket, before anything is logged or decoded -------------

OVERSIZE = 40 << 20  # 40 MiB, over the default 16 MiB limit


def _frames(publisher: FirehosePublisher, seq: int) -> list[bytes]:
    return publisher.encoder.encode(
        "tyk.analytics", node="gw1", boot=1, seq=seq, sent=T0_NS, records=[analytics(T0_NS)]
    )


def _until_received(
    subscriber: FirehoseSubscriber, publisher: FirehosePublisher, seq: int
) -> list[list[bytes]]:
    """Publish good messages until one arrives: the connection comes back after a drop."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        publisher.socket.send_multipart(_frames(publisher, seq))
        got = collect(subscriber, 1, timeout_s=0.2)
        if got:
            return got
    return []


def test_an_oversize_frame_never_reaches_the_wal_and_the_firehose_goes_on(
    zmq_context: zmq.Context[Any], port: int, tmp_path: Path
) -> None:
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="gw1")
    # Connecting: the case libzmq does not recover from by itself after an oversize frame.
    subscriber = FirehoseSubscriber(zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{port}")])
    writer = WalWriter(tmp_path / "wal")
    writer.open(0)
    try:
        assert publisher.wait_for_subscribers(10)
        publisher.socket.send_multipart([b"tyk.analytics", b"e", b"x" * OVERSIZE])
        got = _until_received(subscriber, publisher, seq=1)
        for frames in got:  # what the worker does with every received message
            writer.append(frames, T0_NS)
        writer.commit()
    finally:
        writer.close()
        publisher.close(0)
        subscriber.close()
    assert got == [_frames(publisher, 1)]
    assert subscriber.disconnects >= 1  # the drop is seen and counted
    wal_bytes = sum(f.stat().st_size for f in (tmp_path / "wal").rglob("*") if f.is_file())
    assert wal_bytes < 1 << 20


def test_a_bound_subscriber_drops_an_oversize_sender_which_reconnects(zmq_context: zmq.Context[Any]) -> None:
    front, back = free_port(), free_port()
    proxy = FirehoseProxy(
        zmq_context,
        [parse_endpoint(f"@tcp://127.0.0.1:{front}")],
        [parse_endpoint(f"@tcp://127.0.0.1:{back}")],
        max_message_bytes=1 << 20,
    )
    thread = run_in_thread(proxy)
    subscriber = FirehoseSubscriber(zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{back}")])
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{front}")], node="gw1")
    try:
        assert publisher.wait_for_subscribers(10)
        publisher.socket.send_multipart([b"tyk.analytics", b"e", b"x" * (2 << 20)])
        got = _until_received(subscriber, publisher, seq=1)
    finally:
        publisher.close(0)
        subscriber.close()
        proxy.stop()
        thread.join(5)
        proxy.close()
    assert got == [_frames(publisher, 1)]  # the proxy never forwarded the oversize frame
    assert subscriber.disconnects == 0  # the worker's own connection was never touched


def _kernel_receive_buffer(peer_port: int) -> int:
    """SO_RCVBUF of this process's TCP connection to 127.0.0.1:peer_port, as the kernel holds it."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            probe = socket.fromfd(int(name), socket.AF_INET, socket.SOCK_STREAM)  # a duplicate
        except OSError:
            continue
        with probe:
            try:
                if probe.type == socket.SOCK_STREAM and probe.getpeername() == ("127.0.0.1", peer_port):
                    return probe.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            except OSError:
                continue
    msg = f"no connection to port {peer_port}"
    raise AssertionError(msg)


@pytest.mark.parametrize("rcvbuf_bytes", [512 << 10, 0])
def test_the_connection_s_kernel_receive_buffer_is_the_one_configured(
    zmq_context: zmq.Context[Any], port: int, rcvbuf_bytes: int
) -> None:
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="gw1")
    subscriber = FirehoseSubscriber(
        zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{port}")], rcvbuf_bytes=rcvbuf_bytes
    )
    try:
        assert publisher.wait_for_subscribers(10)
        held = _kernel_receive_buffer(port)
    finally:
        publisher.close(0)
        subscriber.close()
    if rcvbuf_bytes:
        assert held == 2 * rcvbuf_bytes  # Linux doubles it for its bookkeeping
    else:
        assert held < 512 << 10  # TCP's autotuning starts from tcp_rmem's default


# -- messages over the limits in frames or bytes in all: discarded as they are read ------------


def test_a_message_over_the_frame_count_or_total_bytes_is_discarded_and_counted(
    zmq_context: zmq.Context[Any], port: int, tmp_path: Path
) -> None:
    limit = 1 << 20
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="gw1")
    subscriber = FirehoseSubscriber(
        zmq_context, [parse_endpoint(f"tcp://127.0.0.1:{port}")], max_message_bytes=limit
    )
    writer = WalWriter(tmp_path / "wal")
    writer.open(0)
    ingestor = Ingestor(clock=lambda: T0_NS)
    big = b"x" * (limit - 1024)  # every frame under MAXMSGSIZE: libzmq lets each one through
    try:
        assert publisher.wait_for_subscribers(10)
        publisher.socket.send_multipart([b"tyk.analytics", *[big] * 20])  # 20 MiB in 21 frames
        publisher.socket.send_multipart([*_frames(publisher, 0), b"", b"x"])  # 5 small frames
        publisher.socket.send_multipart([b"tyk.analytics", big, big])  # 3 frames, 2 MiB
        publisher.socket.send_multipart(_frames(publisher, 1))
        got = collect(subscriber, 4)
        for frames in got:  # what the worker does: log, then decode
            writer.append(frames, T0_NS)
            ingestor.ingest(frames)
        writer.commit()
    finally:
        writer.close()
        publisher.close(0)
        subscriber.close()
    assert len(got) == 4
    assert got[3] == _frames(publisher, 1)  # the firehose goes on: the good message is whole
    assert all(sum(map(len, frames)) < 1024 for frames in got[:3])  # nothing kept of the others
    assert subscriber.discarded == 3
    assert ingestor.stats.rejected == {"message_too_large": 2, "frame_count": 1}
    assert ingestor.stats.messages == 1  # the good one, decoded
    wal_bytes = sum(f.stat().st_size for f in (tmp_path / "wal").rglob("*") if f.is_file())
    assert wal_bytes < 64 << 10
