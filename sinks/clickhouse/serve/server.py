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

Each request is checked in this order, and nothing of the body is read (no
`100 Continue` is sent) until the first three passed:
1. browser guards (Origin, Sec-Fetch-Site, Host; see access.py): 403;
2. the query_id and the body's framing (see body.py): 400, or 413 over
   `serve_max_request_mb`;
3. credentials (headers or URL parameters): 403;
4. the body, read whole, then decoded with at most `serve_max_decompressed_mb`
   of output (413 past it, 400 when corrupt).
An error answered before the body was read whole closes the connection, so
the rest of the body is never taken for another request. A reader's query
whose client has already closed the connection is not run; one whose client
goes away while it runs is cancelled in the engine (disconnect.py). Request
lines are logged at DEBUG with credentials redacted (redact.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from sinks.clickhouse.serve.access import Access
from sinks.clickhouse.serve.blocks import compress_blocks
from sinks.clickhouse.serve.body import Framing, framing, may_have_body, read_body
from sinks.clickhouse.serve.budget import ByteBudget, Reservation
from sinks.clickhouse.serve.codecs import encode_body
from sinks.clickhouse.serve.connections import CappedRequestHandler, CappedThreadingHTTPServer
from sinks.clickhouse.serve.disconnect import client_gone, run_watched
from sinks.clickhouse.serve.engine import QUEUE_TIMEOUT_S, ChdbEngine, Outcome, summary_header
from sinks.clickhouse.serve.errors import UNKNOWN_EXCEPTION, ServeError, budget_full
from sinks.clickhouse.serve.gate import MAX_STATEMENT_BYTES
from sinks.clickhouse.serve.handles import Role
from sinks.clickhouse.serve.redact import redact
from sinks.clickhouse.serve.request import (
    FORMAT_NAME,
    Credentials,
    HttpQuery,
    credentials,
    is_readonly,
    parse_query,
    query_id,
)
from sinks.clickhouse.serve.settings import ServeSettings
from sinks.clickhouse.serve.stats import ServeStats
from sinks.errors import SinkRejectedError, SinkUnavailableError

log = logging.getLogger(__name__)

DISPLAY_NAME: Final = "tykpulse"
IDLE_KEEPALIVE_S: Final = 30
# A reader's body, as sent and decoded. It is SQL (readers insert nothing, and external data is not
# supported), and a statement past max_query_size is refused anyway; before, a reader reserved up to
# serve_max_request_mb plus serve_max_decompressed_mb of the readers' budget for a body it then sent a
# byte every 20 s: one such connection refused every other reader (503) for as long as it lasted.
READER_MAX_BODY_BYTES: Final = 2 * MAX_STATEMENT_BYTES
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


@dataclasses.dataclass(frozen=True, slots=True)
class _BodyLimits:
    sent: int
    decoded: int


class _Handler(CappedRequestHandler, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tykpulse-clickhouse-http"
    timeout = IDLE_KEEPALIVE_S
    server: _Server
    # per request: the client sent `Expect: 100-continue`; part of the body may still be unread;
    # the request's Origin, when it is in the allow-list
    _expect_continue = False
    _body_pending = False
    _allowed_origin: str | None = None

    def setup(self) -> None:
        super().setup()
        # headers and body go out as separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response on a kept-alive connection
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_expect_100(self) -> bool:
        # `100 Continue` only once the request passed the checks: see _read_body
        self._expect_continue = True
        return True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:
        # the request line (and errors quoting it) may hold ?password=: formatted here, then redacted
        if log.isEnabledFor(logging.DEBUG):
            log.debug("http %s %s", self.address_string(), redact(format % args))

    def _handle(self, method: str) -> None:
        # until the body is read whole, the rest of it must not be parsed as the next request
        self._body_pending = may_have_body(self.headers)
        self._allowed_origin = None
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        client_query_id = ""
        role: Role | None = None
        stats = self.server.stats
        reservation: Reservation | None = None
        try:
            self._allowed_origin = self.server.access.check_browser(headers, self._local_address())
            client_query_id = query_id(params)
            frame = framing(self.headers, self.server.max_request_bytes)
            if url.path in _HEALTH_PATHS:
                self._reply_ok()
                return
            if url.path not in ("", "/"):
                stats.refused(404, role)
                self._reply(404, b"There is no handle " + url.path.encode() + b"\n", "text/plain")
                return
            creds = credentials(headers, params)
            role = self.server.access.role(creds, readonly_request=is_readonly(method, params))
            if role is Role.WRITER:
                # the writer's connections are never closed to make room for others (connections.py)
                self.server.cap.protect(self.cap_connection)
            limits = self._body_limits(role)
            if role is Role.READER:
                frame = framing(self.headers, limits.sent)
                # before the body is read or decoded: readers' requests hold a bounded total (budget.py)
                reservation = self._reserve(self._may_hold(frame, headers, params, limits))
            body = self._read_body(frame, limits.sent)
            query = parse_query(method, params, headers, body, max_decompressed=limits.decoded)
            if reservation is not None:
                reservation.resize(len(query.sql) if query is not None else 0)
            del body
            if query is None:
                self._reply_ok()
                return
            outcome = self._run(query, role, creds, reservation)
            if outcome is None:
                stats.cancelled()
                self.close_connection = True
                return
            if reservation is not None:
                self._hold_result(reservation, outcome, query.response_encoding, query.block_compression)
            # counted before the reply, so a client that has its answer also finds it counted
            stats.answered(role, _rows_written(outcome))
            try:
                self._reply_outcome(outcome, query.query_id, query.response_encoding, query.block_compression)
            except OSError as exc:
                # the client closed, reset, or stopped reading for the socket's timeout: no one to answer
                stats.abandoned()
                self.close_connection = True
                log.info("a client went away before its answer was sent (%s)", type(exc).__name__)
        except ServeError as exc:
            stats.refused(exc.status, role)
            self._reply_error(exc, client_query_id)
        except Exception as exc:
            log.exception("unexpected error serving a query")
            error = ServeError(UNKNOWN_EXCEPTION, f"{type(exc).__name__}: {exc}")
            stats.refused(error.status, role)
            self._reply_error(error, client_query_id)
        finally:
            if reservation is not None:
                reservation.release()
            self._expect_continue = False
            if self._body_pending:
                self.close_connection = True

    def _body_limits(self, role: Role) -> _BodyLimits:
        if role is Role.READER:
            # a reader's body is its statement, refused past max_query_size anyway (gate.check_size)
            return _BodyLimits(
                min(self.server.max_request_bytes, READER_MAX_BODY_BYTES),
                min(self.server.max_decompressed_bytes, READER_MAX_BODY_BYTES),
            )
        return _BodyLimits(self.server.max_request_bytes, self.server.max_decompressed_bytes)

    def _may_hold(
        self, frame: Framing, headers: dict[str, str], params: dict[str, str], limits: _BodyLimits
    ) -> int:
        """Bytes a reader's request may hold while its body is read and decoded."""
        sent = limits.sent if frame.chunked else frame.length
        encoded = headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
        decoded = encoded or params.get("decompress", "0") not in ("", "0")
        return sent + (limits.decoded if decoded and not frame.empty else 0)

    def _reserve(self, size: int) -> Reservation:
        # a connection closed to make room (connections.py) stops waiting: its thread ends at once
        connection = self.cap_connection
        reservation = self.server.reader_budget.reserve(
            size, QUEUE_TIMEOUT_S, abandoned=lambda: connection.dropped
        )
        if reservation is None:
            raise budget_full()
        return reservation

    def _hold_result(
        self, reservation: Reservation, outcome: Outcome, encoding: str | None, block_compression: str | None
    ) -> None:
        # the result (and its compressed copy) stays in memory until the client has read it all
        size = len(outcome.body) * (2 if encoding is not None or block_compression is not None else 1)
        if not reservation.resize(size):
            raise budget_full()

    def _local_address(self) -> str:
        return str(self.connection.getsockname()[0])

    def _read_body(self, frame: Framing, limit: int) -> bytes:
        if frame.empty:
            self._body_pending = False
            return b""
        if self._expect_continue:
            self._expect_continue = False
            self.send_response_only(100)
            self.end_headers()
        body = read_body(self.rfile, frame, limit)
        self._body_pending = False
        return body

    def _run(
        self, query: HttpQuery, role: Role, creds: Credentials, reservation: Reservation | None
    ) -> Outcome | None:
        """The query's outcome; None for a reader whose client went away (its query not run, or cancelled).

        A reader's answer is held in `reservation` as it arrives, beside its statement.
        """
        engine = self.server.engine
        cap, connection = self.server.cap, self.cap_connection

        def running() -> contextlib.AbstractContextManager[None]:
            # not evictable while it holds a query slot (not while it waits for one)
            return cap.running(connection)

        if role is not Role.READER:
            return engine.run(query, role=role, user=creds.user, while_running=running)
        statement = len(query.sql)

        def hold(answer: int) -> bool:
            # refused, the answer's share goes back in the same step: answers read at the same time
            # would otherwise all be refused by each other's partial answers
            return reservation is None or reservation.resize(statement + answer, refused=statement)

        if client_gone(self.connection):
            log.debug("client closed the connection before its query ran query_id=%r", query.query_id)
            return None
        return run_watched(
            lambda ticket: engine.run(
                query, role=role, user=creds.user, ticket=ticket, while_running=running, hold=hold
            ),
            engine.cancel,
            self.connection,
        )

    def _close_if_body_pending(self) -> None:
        # also tells the client, which would otherwise send its next request into a closed socket
        if self._body_pending:
            self.send_header("Connection", "close")

    def _common_headers(self, query_id: str) -> None:
        """query_id must have passed request.query_id: it goes into a header as it is."""
        self.send_header("X-ClickHouse-Server-Display-Name", DISPLAY_NAME)
        self.send_header("X-ClickHouse-Timezone", self.server.engine.timezone)
        if query_id:
            self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("Keep-Alive", f"timeout={IDLE_KEEPALIVE_S}")
        self._cors_headers()

    def _cors_headers(self) -> None:
        # only an Origin that is in the allow-list, so never text the client chose freely
        if self._allowed_origin is not None:
            self.send_header("Access-Control-Allow-Origin", self._allowed_origin)
            self.send_header("Vary", "Origin")

    def _reply_outcome(
        self, outcome: Outcome, query_id: str, encoding: str | None, block_compression: str | None
    ) -> None:
        body = outcome.body
        if block_compression is not None and body:
            body = compress_blocks(body, block_compression)
        self.send_response(200)
        self._common_headers(query_id)
        if outcome.fmt is not None and FORMAT_NAME.fullmatch(outcome.fmt):
            # the format comes from the client's SQL or default_format: a name, or not echoed
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
        self._close_if_body_pending()
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
        self._cors_headers()
        self._close_if_body_pending()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _rows_written(outcome: Outcome) -> int:
    written = outcome.summary.get("written_rows", "0")
    return int(written) if written.isdigit() else 0


class _Server(CappedThreadingHTTPServer):
    # a restarted endpoint must be able to take its port back at once
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        engine: ChdbEngine,
        access: Access,
        *,
        max_request_bytes: int,
        max_decompressed_bytes: int,
        max_connections: int,
        reader_inflight_bytes: int,
        stats: ServeStats,
    ) -> None:
        self.reader_budget = ByteBudget(reader_inflight_bytes)
        self.engine = engine
        self.access = access
        self.stats = stats
        self.max_request_bytes = max_request_bytes
        self.max_decompressed_bytes = max_decompressed_bytes
        super().__init__(address, _Handler, max_connections=max_connections)


class ClickHouseHttpServer:
    """ClickHouse's HTTP interface over the embedded database at `path`, in a background thread.

    Usage: `with ClickHouseHttpServer(path, settings) as server: ... server.url ...`.
    Raises SinkRejectedError for an address it must not use, SinkUnavailableError
    when it cannot bind or open the engine.
    """

    def __init__(self, path: Path, settings: ServeSettings) -> None:
        self.path = path
        self.settings = settings
        self.engine = ChdbEngine(
            path,
            max_sessions=settings.serve_max_sessions,
            reader_limits=settings.reader_limits(),
            max_concurrent_readers=settings.serve_reader_max_concurrent,
        )
        self.engine.sessions.configure(
            max_per_user=settings.serve_max_sessions_per_user,
            max_reader_timeout_s=settings.serve_max_session_timeout_s,
        )
        # kept here, not on the HTTP server, so the counts outlive a close and read 0 before start
        self.stats = ServeStats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        """The HTTP thread is alive (the health of `db serve`)."""
        return self._thread is not None and self._thread.is_alive()

    def readings(self) -> dict[str, float | dict[str, float]]:
        """What /metrics and /status export: the answers (stats), the connection cap, readers' budget.

        The cap's and the budget's readings are 0 before start (and the limit that of the settings).
        """
        readings = self.stats.readings()
        cap = self.connection_readings()
        budget = self.reader_budget_readings()
        readings["connections_open"] = cap.get("open", 0.0)
        readings["connections_peak"] = cap.get("peak", 0.0)
        readings["connections_closed"] = {
            reason: cap.get(reason, 0.0) for reason in ("evicted", "refused", "head_timed_out")
        }
        readings["reader_in_flight_bytes"] = budget.get("in_flight_bytes", 0.0)
        readings["reader_in_flight_peak_bytes"] = budget.get("peak_bytes", 0.0)
        readings["reader_in_flight_limit_bytes"] = budget.get(
            "limit_bytes", float(self.settings.serve_reader_max_inflight_mb << 20)
        )
        readings["reader_budget_refused"] = budget.get("refused", 0.0)
        return readings

    def connection_readings(self) -> dict[str, float]:
        """Connections open now and at most, and those the cap closed (connections.py); {} before start."""
        return self._server.cap.readings() if self._server is not None else {}

    def reader_budget_readings(self) -> dict[str, float]:
        """Bytes readers' requests hold now and at most, the limit, refusals (budget.py); {} before start."""
        return self._server.reader_budget.readings() if self._server is not None else {}

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
            self._server = _Server(
                address,
                self.engine,
                access,
                max_request_bytes=self.settings.serve_max_request_mb << 20,
                max_decompressed_bytes=self.settings.serve_max_decompressed_mb << 20,
                max_connections=self.settings.serve_max_connections,
                reader_inflight_bytes=self.settings.serve_reader_max_inflight_mb << 20,
                stats=self.stats,
            )
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
