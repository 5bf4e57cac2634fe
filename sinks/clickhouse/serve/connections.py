"""A cap on a threaded HTTP server's open connections (generic: nothing ClickHouse-specific here).

`ThreadingHTTPServer` starts a thread per connection and keeps it while the
client keeps the socket, and its timeout is per recv: a client sending one
byte every 29 s, or a thousand clients sending nothing, hold threads and file
descriptors for ever, until accept() fails with EMFILE, the accept loop spins
on the still-readable listening socket, and the clients that matter (a
worker's inserts) can no longer connect.

`CappedThreadingHTTPServer` keeps at most `max_connections` open. When full,
a new connection makes room by closing the evictable one that has waited
longest for its next request (shutdown(SHUT_RDWR) wakes its thread, which
then ends). A connection is not evictable while the handler marks it running
(`ConnectionCap.running`, e.g. a query in the engine) nor once the handler has
protected it (`protect`, e.g. after an authenticated writer request; sticky).
When nothing is evictable the new connection is closed at once. The request
line and headers must arrive whole within `head_timeout_s` of their first
byte (one reaper thread closes those that do not) and within MAX_HEAD_BYTES
(431 beyond), and accept() failing for lack of descriptors backs off instead
of spinning.

Use: subclass `CappedThreadingHTTPServer` (pass `max_connections`) and mix
`CappedRequestHandler` into the handler, before `BaseHTTPRequestHandler`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import http.client
import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S: Final = 10.0
# A request line and its headers, together. http.server alone takes 100 header lines of 64 KiB each and
# keeps them parsed for the request's life: 250 connections with 6.4 MB heads, waiting for a query slot,
# took db serve from 0.41 to 2.48 GB RSS. The line of a GET with its query in the URL is up to 64 KiB.
MAX_HEAD_BYTES: Final = 128 << 10
REAP_EVERY_S: Final = 0.5
ACCEPT_BACKOFF_S: Final = 0.05
_OUT_OF_DESCRIPTORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclasses.dataclass(eq=False, slots=True)
class Connection:
    sock: socket.socket
    since: float  # when it last started waiting (for its next request, or after running)
    protected: bool = False
    running: int = 0
    head_deadline: float | None = None
    dropped: bool = False  # closed by the cap (evicted, or its head took too long)

    @property
    def evictable(self) -> bool:
        return not self.protected and self.running == 0


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class ConnectionCap:
    """The open connections of one server, at most `max_connections` of them."""

    def __init__(self, max_connections: int, *, head_timeout_s: float = HEAD_TIMEOUT_S) -> None:
        if max_connections <= 0:
            msg = "max_connections must be positive"
            raise ValueError(msg)
        self.max_connections = max_connections
        self.head_timeout_s = head_timeout_s
        self._lock = threading.Lock()
        self._open: dict[socket.socket, Connection] = {}
        self._stopped = threading.Event()
        self._reaper: threading.Thread | None = None
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self.peak = 0

    def admit(self, sock: socket.socket) -> Connection | None:
        """Register a new connection, closing the longest-waiting evictable one when full; None: refuse it."""
        now = time.monotonic()
        with self._lock:
            if len(self._open) >= self.max_connections:
                victim = min(
                    (c for c in self._open.values() if c.evictable), key=lambda c: c.since, default=None
                )
                if victim is None:
                    self.refused += 1
                    return None
                self._drop_locked(victim)
                self.evicted += 1
            connection = Connection(sock, now)
            self._open[sock] = connection
            self.peak = max(self.peak, len(self._open))
        return connection

    def _drop_locked(self, connection: Connection) -> None:
        # under the lock: the owner closes the socket only after release(), which takes it too, so the
        # descriptor shut here cannot have been reused by another connection
        del self._open[connection.sock]
        connection.dropped = True
        _shut(connection.sock)

    def connection(self, sock: socket.socket) -> Connection:
        with self._lock:
            found = self._open.get(sock)
        # a connection evicted before its thread looked itself up: a stand-in, already dropped
        return found if found is not None else Connection(sock, time.monotonic(), dropped=True)

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def protect(self, connection: Connection) -> None:
        """Never evict this connection (for the rest of its life)."""
        with self._lock:
            connection.protected = True

    @contextlib.contextmanager
    def running(self, connection: Connection) -> Iterator[None]:
        """Not evictable while inside; waiting again from when it leaves."""
        with self._lock:
            connection.running += 1
        try:
            yield
        finally:
            with self._lock:
                connection.running -= 1
                connection.since = time.monotonic()

    def waiting(self, connection: Connection) -> None:
        """The connection waits for its next request from now."""
        with self._lock:
            connection.since = time.monotonic()

    def head_started(self, connection: Connection) -> None:
        with self._lock:
            connection.head_deadline = time.monotonic() + self.head_timeout_s

    def head_done(self, connection: Connection) -> None:
        with self._lock:
            connection.head_deadline = None

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="connection-reaper", daemon=True)
            self._reaper.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
            self._reaper = None

    def _reap(self) -> None:
        while not self._stopped.wait(REAP_EVERY_S):
            now = time.monotonic()
            with self._lock:
                late = [
                    c for c in self._open.values() if c.head_deadline is not None and c.head_deadline < now
                ]
                for connection in late:
                    self._drop_locked(connection)
                self.timed_out += len(late)
            if late:
                log.debug(
                    "closed %d connections whose request head took over %ss",
                    len(late),
                    self.head_timeout_s,
                )

    def readings(self) -> dict[str, float]:
        with self._lock:
            return {
                "open": float(len(self._open)),
                "peak": float(self.peak),
                "evicted": float(self.evicted),
                "refused": float(self.refused),
                "head_timed_out": float(self.timed_out),
            }


class CappedThreadingHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with a ConnectionCap (`self.cap`); see the module's docstring."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int,
        head_timeout_s: float | None = None,
    ) -> None:
        head_timeout_s = HEAD_TIMEOUT_S if head_timeout_s is None else head_timeout_s
        self.cap = ConnectionCap(max_connections, head_timeout_s=head_timeout_s)
        super().__init__(address, handler)
        self.cap.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                # the listening socket stays readable: without a pause the accept loop spins a core
                log.warning("cannot accept a connection: %s", exc)
                time.sleep(ACCEPT_BACKOFF_S)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.cap.admit(request) is None:
            log.debug("connection refused: %d connections open, none evictable", self.cap.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.cap.release(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a connection the cap closed, or a client gone mid-reply, fails its read or write: nothing to
        # report; anything else is a bug in the handler
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended with an error", client_address, exc_info=True)
        else:
            log.exception("error serving a request client=%s", client_address)

    def server_close(self) -> None:
        super().server_close()
        self.cap.stop()


class _HeadReader:
    """A connection's reader while its request head is read: the head may be at most `limit` bytes."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self._raw = raw
        self._left = limit

    def readline(self, size: int = -1) -> bytes:
        # one byte more than is left, so that a head that is too long is told from one that fits
        room = self._left + 1 if size < 0 else min(size, self._left + 1)
        line = self._raw.readline(room)
        self._left -= len(line)
        if self._left < 0:
            # what parse_request answers with 431 (Request Header Fields Too Large)
            msg = "request head"
            raise http.client.LineTooLong(msg)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class CappedRequestHandler(BaseHTTPRequestHandler):
    """Handler side of CappedThreadingHTTPServer: request-head deadline, waiting/dropped bookkeeping."""

    server: CappedThreadingHTTPServer
    cap_connection: Connection

    def setup(self) -> None:
        super().setup()
        self.cap_connection = self.server.cap.connection(self.connection)

    def _dropped(self) -> bool:
        return self.cap_connection.dropped

    def handle_one_request(self) -> None:
        cap, connection = self.server.cap, self.cap_connection
        cap.waiting(connection)
        rfile = self.rfile
        try:
            # wait for the first byte with the idle timeout, then give the whole head its deadline
            if self._dropped() or (isinstance(rfile, io.BufferedReader) and not rfile.peek(1)):
                self.close_connection = True
                return
        except OSError:  # TimeoutError included: an idle keep-alive connection
            self.close_connection = True
            return
        cap.head_started(connection)
        self.rfile = _HeadReader(rfile, MAX_HEAD_BYTES)  # type: ignore[assignment]  # reads as rfile does
        try:
            super().handle_one_request()
        except OSError:
            if not self._dropped():
                raise
            self.close_connection = True
        finally:
            self.rfile = rfile
            cap.head_done(connection)

    def parse_request(self) -> bool:
        # the head is read whole once parsed: what follows (a body, a query) has no head deadline and
        # no head size limit
        parsed = super().parse_request()
        if isinstance(self.rfile, _HeadReader):
            self.rfile = self.rfile._raw
        self.server.cap.head_done(self.cap_connection)
        if self.cap_connection.dropped:
            self.close_connection = True
            return False
        return parsed
