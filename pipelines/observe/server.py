"""The HTTP endpoint of every long-running command: /metrics (Prometheus), /healthz and /status (JSON).

Served from a daemon thread with the standard library's threading HTTP
server; it only reads the watch (WorkerWatch for `run`, ServiceWatch for the
others). Bind it to loopback unless a scraper elsewhere needs it: it has no
authentication.

Anyone who reaches the port must not be able to cost the process more than a
few threads. The server is `db serve`'s capped one (sinks/clickhouse/serve/
connections.py, generic): at most MAX_CONNECTIONS are open at once, and a new
one beyond that closes the one that has waited longest, so a flood of idle
connections cannot keep a scraper's fresh one out for long; a request head
(one request per connection) must arrive whole within HEAD_DEADLINE_S however
slowly its client sends, and every read or write waits at most that long.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from sinks.clickhouse.serve.connections import CappedRequestHandler, CappedThreadingHTTPServer

log = logging.getLogger(__name__)

MAX_CONNECTIONS: Final = 32
HEAD_DEADLINE_S: Final = 10.0


class Observed(Protocol):
    """What the endpoint serves: a registry for /metrics, health() for /healthz, status() for /status."""

    @property
    def registry(self) -> CollectorRegistry: ...
    def health(self) -> tuple[bool, str]: ...
    def status(self) -> dict[str, Any]: ...


def _handler(watch: Observed) -> type[BaseHTTPRequestHandler]:
    class Handler(CappedRequestHandler, BaseHTTPRequestHandler):
        timeout = HEAD_DEADLINE_S  # per read or write; the deadline over the whole head is the cap's

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


class MetricsServer:
    def __init__(self, watch: Observed, host: str, port: int) -> None:
        self.httpd = CappedThreadingHTTPServer(
            (host, port), _handler(watch), max_connections=MAX_CONNECTIONS, head_timeout_s=HEAD_DEADLINE_S
        )
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
