"""A threaded HTTP server speaking enough of ClickHouse's HTTP interface for
clickhouse-connect's `http://` client and Grafana's ClickHouse datasource.

    GET  /ping, /replicas_status          "Ok."
    GET  /?query=SELECT ...               read-only query
    POST /?query=...  (body: more SQL or INSERT data)
    POST /            (body: the statement)

Responses carry the headers clients read (X-ClickHouse-Query-Id, -Format,
-Timezone, -Summary, -Exception-Code) and are compressed as negotiated
(`enable_http_compression=1` + Accept-Encoding) and, for clients that use
ClickHouse's own block compression, `compress=1`/`decompress=1`. Results are
produced whole before the first byte is sent, so an error is always an HTTP
error, never a truncated body. Not supported, with a clear error: multipart
requests (external data).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from sinks.clickhouse.serve.access import Access
from sinks.clickhouse.serve.blocks import compress_blocks
from sinks.clickhouse.serve.codecs import encode_body
from sinks.clickhouse.serve.engine import ChdbEngine, Outcome, summary_header
from sinks.clickhouse.serve.errors import UNKNOWN_EXCEPTION, ServeError
from sinks.clickhouse.serve.request import credentials, parse_query
from sinks.clickhouse.serve.settings import ServeSettings
from sinks.errors import SinkRejectedError, SinkUnavailableError

log = logging.getLogger(__name__)

DISPLAY_NAME: Final = "tykpulse"
IDLE_KEEPALIVE_S: Final = 30
_HEALTH_PATHS: Final = frozenset({"/ping", "/replicas_status"})
_CONTENT_TYPES: Final = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
}


def _content_type(fmt: str | None) -> str:
    if fmt is None:
        return "text/plain; charset=UTF-8"
    if fmt in _CONTENT_TYPES:
        return _CONTENT_TYPES[fmt]
    if fmt.startswith(("TabSeparated", "TSV")):
        return _CONTENT_TYPES["TSV"]
    return "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tykpulse-clickhouse-http"
    timeout = IDLE_KEEPALIVE_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out as separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response on a kept-alive connection
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.address_string(), *args)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        query_id = params.get("query_id", "")
        try:
            body = self._read_body(headers)
            if url.path in _HEALTH_PATHS:
                self._reply_ok()
                return
            if url.path not in ("", "/"):
                self._reply(404, b"There is no handle " + url.path.encode() + b"\n", "text/plain")
                return
            query = parse_query(method, params, headers, body)
            if query is None:
                self._reply_ok()
                return
            query_id = query.query_id
            creds = credentials(headers, params)
            role = self.server.access.role(creds, readonly_request=query.readonly)
            outcome = self.server.engine.run(query, role=role, user=creds.user)
            self._reply_outcome(outcome, query_id, query.response_encoding, query.block_compression)
        except ServeError as exc:
            self._reply_error(exc, query_id)
        except Exception as exc:
            log.exception("unexpected error serving a query")
            self._reply_error(ServeError(UNKNOWN_EXCEPTION, f"{type(exc).__name__}: {exc}"), query_id)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        limit = self.server.max_request_bytes
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked(limit)
        length = int(headers.get("content-length", "0") or 0)
        if length > limit:
            self.close_connection = True
            msg = f"Request body of {length} bytes is larger than the limit of {limit}"
            raise ServeError(36, msg, name="BAD_ARGUMENTS")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                msg = f"Request body is larger than the limit of {limit} bytes"
                raise ServeError(36, msg, name="BAD_ARGUMENTS")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _common_headers(self, query_id: str) -> None:
        self.send_header("X-ClickHouse-Server-Display-Name", DISPLAY_NAME)
        self.send_header("X-ClickHouse-Timezone", self.server.engine.timezone)
        if query_id:
            self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("Keep-Alive", f"timeout={IDLE_KEEPALIVE_S}")

    def _reply_outcome(
        self, outcome: Outcome, query_id: str, encoding: str | None, block_compression: str | None
    ) -> None:
        body = outcome.body
        if block_compression is not None and body:
            body = compress_blocks(body, block_compression)
        self.send_response(200)
        self._common_headers(query_id)
        if outcome.fmt is not None:
            self.send_header("X-ClickHouse-Format", outcome.fmt)
        self.send_header("X-ClickHouse-Summary", summary_header(outcome))
        self.send_header("Content-Type", _content_type(outcome.fmt))
        if encoding is not None and body:
            body = encode_body(body, encoding)
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reply_error(self, exc: ServeError, query_id: str) -> None:
        body = exc.body(f"{self.server.engine.version} (tykpulse)")
        self.send_response(exc.status)
        self._common_headers(query_id)
        self.send_header("X-ClickHouse-Exception-Code", str(exc.code))
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reply_ok(self) -> None:
        self._reply(200, b"Ok.\n", "text/html; charset=UTF-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("X-ClickHouse-Server-Display-Name", DISPLAY_NAME)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # a restarted endpoint must be able to take its port back at once
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], engine: ChdbEngine, access: Access, max_request_bytes: int
    ) -> None:
        self.engine = engine
        self.access = access
        self.max_request_bytes = max_request_bytes
        super().__init__(address, _Handler)


class ClickHouseHttpServer:
    """ClickHouse's HTTP interface over the embedded database at `path`, in a background thread.

    Usage: `with ClickHouseHttpServer(path, settings) as server: ... server.url ...`.
    Raises SinkRejectedError for an address it must not use, SinkUnavailableError
    when it cannot bind or open the engine.
    """

    def __init__(self, path: Path, settings: ServeSettings) -> None:
        self.path = path
        self.settings = settings
        self.engine = ChdbEngine(path, max_sessions=settings.serve_max_sessions)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            msg = "the endpoint is not started"
            raise RuntimeError(msg)
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def start(self) -> ClickHouseHttpServer:
        try:
            address = self.settings.address()
        except ValueError as exc:
            raise SinkRejectedError(str(exc)) from exc
        try:
            self.engine.open()
        except ServeError as exc:
            msg = f"cannot open the embedded database at {self.path}: {exc.message}"
            raise SinkUnavailableError(msg) from exc
        access = Access(self.settings)
        try:
            self._server = _Server(address, self.engine, access, self.settings.serve_max_request_mb << 20)
        except OSError as exc:
            self.engine.close()
            msg = f"cannot serve ClickHouse HTTP on {address[0]}:{address[1]}: {exc}"
            raise SinkUnavailableError(msg) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="tykpulse-serve",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "serving ClickHouse HTTP url=%s path=%s writable=%s version=%s",
            self.url,
            self.engine.connection_string,
            access.writable,
            self.engine.version,
        )
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.engine.close()

    def __enter__(self) -> ClickHouseHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.close()
