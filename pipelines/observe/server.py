"""The HTTP endpoint of every long-running command: /metrics (Prometheus), /healthz and /status (JSON).

Served from a daemon thread with the standard library's threading HTTP
server; it only reads the watch (WorkerWatch for `run`, ServiceWatch for the
others). Bind it to loopback unless a scraper elsewhere needs it: it has no
authentication.

Anyone who reaches the port must not be able to cost the process more than a
few threads: a connection (one request each) is closed once it is older than
CONNECTION_DEADLINE_S, however slowly its client sends, and at most
MAX_CONNECTIONS are open at once; a new one beyond that closes the oldest, so
a flood of idle connections cannot keep a scraper's fresh one out for long.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

MAX_CONNECTIONS: Final = 32
CONNECTION_DEADLINE_S: Final = 10.0


class Observed(Protocol):
    """What the endpoint serves: a registry for /metrics, health() for /healthz, status() for /status."""

    @property
    def registry(self) -> CollectorRegistry: ...
    def health(self) -> tuple[bool, str]: ...
    def status(self) -> dict[str, Any]: ...


def _handler(watch: Observed) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CONNECTION_DEADLINE_S  # per read; the deadline over the whole connection is the server's

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(watch.registry))
            elif path == "/healthz":
                healthy, detail = watch.health()
                self._send(200 if healthy else 503, "text/plain; charset=utf-8", detail.encode() + b"\n")
            elif path == "/status":
                body = json.dumps(watch.status()).encode()
                self._send(200, "application/json", body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /status\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http " + format, *args)

    return Handler


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` of them, none older than `deadline_s`."""

    daemon_threads = True
    # connections the kernel completes before they are accepted: socketserver's 5 made every few
    # connections of a burst wait a second for the SYN's retransmit
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        deadline_s: float = CONNECTION_DEADLINE_S,
    ) -> None:
        self.max_connections = max_connections
        self.deadline_s = deadline_s
        self.closed_early = 0
        self._open: dict[socket.socket, float] = {}  # connection -> when it was accepted
        self._lock = threading.Lock()
        super().__init__(address, handler)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._open) >= self.max_connections:
                self._close_early(min(self._open, key=self._open.__getitem__))
            self._open[request] = time.monotonic()
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a connection closed early, or by its client, fails its read or write: not worth a traceback
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("metrics connection ended early client=%s", client_address, exc_info=True)
        else:
            log.exception("error serving metrics client=%s", client_address)

    def service_actions(self) -> None:
        # serve_forever calls this every poll interval
        expired = time.monotonic() - self.deadline_s
        with self._lock:
            for connection in [c for c, accepted in self._open.items() if accepted < expired]:
                self._close_early(connection)

    def _close_early(self, connection: socket.socket) -> None:
        """Wake the connection's thread (its read returns at once) and forget it; under the lock."""
        del self._open[connection]
        self.closed_early += 1
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)


class MetricsServer:
    def __init__(self, watch: Observed, host: str, port: int) -> None:
        self.httpd = _BoundedServer((host, port), _handler(watch))
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tykpulse-metrics", daemon=True)

    @property
    def url(self) -> str:
        """Where a client on this host reaches it (loopback when bound to every address)."""
        host = str(self.httpd.server_address[0])
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host  # noqa: S104
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics, /healthz and /status on http://%s:%d", self.httpd.server_address[0], self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
