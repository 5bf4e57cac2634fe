"""The metrics endpoint under a flood of idle and slow connections (real sockets): the process keeps a
bounded number of threads for it and a scraper still gets its answer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipelines.observe.server import MAX_CONNECTIONS, MetricsServer
from tests.harness.tykpulse import wait_until

pytestmark = pytest.mark.component


class _Watch:
    registry = CollectorRegistry()

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    def status(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    s = MetricsServer(_Watch(), "127.0.0.1", 0).start()
    yield s
    s.close()


def healthz(server: MetricsServer) -> bytes:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as response:  # noqa: S310 - loopback
        return bytes(response.read())


def connect(server: MetricsServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def test_idle_and_slow_connections_cost_a_bounded_number_of_threads_and_scrapes_still_work(
    server: MetricsServer,
) -> None:
    before = threading.active_count()
    idle = [connect(server) for _ in range(6 * MAX_CONNECTIONS)]
    slow = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        for s in slow:
            s.sendall(b"GET /hea")  # a request line that never ends
        time.sleep(0.5)
        assert threading.active_count() <= before + MAX_CONNECTIONS + 2
        assert server.httpd.cap.readings()["open"] <= MAX_CONNECTIONS
        assert healthz(server) == b"ok\n"
    finally:
        for s in idle + slow:
            s.close()


def test_a_request_that_never_ends_is_closed_at_the_deadline(
    server: MetricsServer,
) -> None:
    server.httpd.cap.head_timeout_s = 1.0
    slow = connect(server)
    closed = threading.Event()

    def trickle() -> None:
        # one byte every 0.2 s: each read is quick, so only a deadline over the whole head ends it
        with contextlib.suppress(OSError):
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                slow.sendall(bytes([byte]))
                time.sleep(0.2)
        closed.set()

    threading.Thread(target=trickle, daemon=True).start()
    try:
        wait_until(lambda: server.httpd.cap.timed_out >= 1, "the slow connection closed", timeout=30)
        wait_until(closed.is_set, "the client seeing its connection closed", timeout=30)
        assert server.httpd.cap.readings()["open"] == 0
    finally:
        slow.close()
