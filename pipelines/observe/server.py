"""The worker's HTTP endpoint: /metrics (Prometheus), /healthz and /status (JSON).

Served from a daemon thread with the standard library's threading HTTP
server; it only reads the WorkerWatch. Bind it to loopback unless a
scraper elsewhere needs it: it has no authentication.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from pipelines.observe.watch import WorkerWatch

log = logging.getLogger(__name__)


def _handler(watch: WorkerWatch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(watch.metrics.registry))
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
    def __init__(self, watch: WorkerWatch, host: str, port: int) -> None:
        self.httpd = ThreadingHTTPServer((host, port), _handler(watch))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tykpulse-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics, /healthz and /status on http://%s:%d", self.httpd.server_address[0], self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
