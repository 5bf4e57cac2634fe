"""`tykpulse bridge tyk-webhook`: the HTTP receiver for Tyk's webhook event handler.

asyncio + h11 (a sans-I/O HTTP/1.1 parser): keep-alive and pipelined requests
on any number of connections, as Go's HTTP client (one per event, sharing a
connection pool) sends them. The event loop only parses, checks and queues;
publishing runs on one dedicated thread, the only one touching the ZeroMQ
socket, so a slow firehose never stalls the HTTP side.

Routes: `POST|PUT|PATCH <path>` (default /tyk/events) accepts one event;
`GET /healthz` is 200 while a worker subscribes to `tyk.event.`, else 503;
`GET /stats` returns the counters.

Answers: 200 accepted; 400 body not an event (`bad_body`, `bad_event`,
`too_deep`: JSON nested over 64 levels, `out_of_range`: an integer msgpack
cannot carry as int64; `bad_target`: a request target that is not a URL); 401 wrong or missing shared secret;
413 body too large (from Content-Length, or while reading, before parsing; the
rest of the body is not read: the connection is closed after the answer); 408
head and body not received within `request_timeout_s` (one deadline for the
whole request, however slowly it dribbles in; 120 s idle between keep-alive
requests; a client that does not read its answers within `request_timeout_s` is closed,
counted `reply_unread`); 503 no worker subscribed (the event would be dropped: Tyk logs the
failure), or over `max_connections` connections at once (answered and closed) when no connection
can make room: at the cap, a new connection closes the one that has waited longest for a request
among those that never sent the shared secret (counted `evicted`), so connections that send nothing
cannot hold every slot; Tyk's, once they sent the secret, are never closed for room. The cap is
lowered to what the descriptor limit holds (connection_budget). Tyk never retries a webhook, so
delivery from Tyk is at most once; from the receiver on, an
accepted event is published within `flush_ms` unless the process dies first;
one the publisher still refuses is counted (`publish_failed`) and logged, and
costs only itself, not the batch it was flushed with.
A request whose answer does not depend on its body (a bad target, /healthz, /stats, the wrong path or
method, a missing or wrong secret) is answered as soon as its head is read when its body is chunked
or over 64 KiB; that body is not read, and the connection is closed after the answer: without the
secret, nobody makes the receiver parse such a body (one of tiny chunks cost this loop ~10 us a chunk).
Every rejection is counted by reason in /stats; each reason is logged at most
once per 10 s (with how many were held back).

Secure by default: anyone who can post here can put events on the firehose,
so a listen address other machines can reach (any non-loopback address,
0.0.0.0, ::, or an empty host) is refused without a shared secret; loopback
without one is allowed with a warning.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import hmac
import http
import json
import logging
import resource
import threading
import time
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import h11

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.publishing import BridgePublisher
from pipelines.bridges.tyk_webhook import WebhookEvent, webhook_event
from pipelines.errors import ConfigurationError
from pipelines.firehose.protocol import EVENT_PREFIX
from pipelines.observe.throttle import LogThrottle
from pipelines.settings import TykWebhookSettings
from sinks.options import is_loopback

log = logging.getLogger(__name__)

_IDLE_TIMEOUT_S: Final = 120.0  # between requests on a keep-alive connection
# After refusing a body over the limit: what is discarded, at most, so the client can read the answer.
_LINGER_S: Final = 1.0
_LINGER_BYTES: Final = 256 * 1024
_TICK_S: Final = 0.1
# A body up to this long (Content-Length) is read even when the head decides the answer (see _serve).
_SHORT_BODY_BYTES: Final = 64 * 1024
_SHUTDOWN_DRAIN_S: Final = 10.0
_ACCEPT_METHODS: Final = frozenset({b"POST", b"PUT", b"PATCH"})
# Connections asyncio accepts in one go (and the listen queue): descriptors used before any is served.
_ACCEPT_BACKLOG: Final = 128
# Accept bursts before the first connection of a burst can make room (_evict): its transport is
# made one loop turn after the accept, its handler runs the next, its victim closes the one after.
# A starved loop finds the listen queue full at each of those turns.
_BURSTS_BEFORE_ROOM: Final = 3
# Descriptors the process needs besides connections (ZeroMQ, the metrics endpoint, logs).
_SPARE_DESCRIPTORS: Final = 64


@dataclasses.dataclass(slots=True)
class WebhookStats:
    accepted: int = 0
    published: int = 0
    # accepted, then not published: alone over the firehose's message limit (BridgePublisher)
    too_large: int = 0
    rejected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "published": self.published,
            "too_large": self.too_large,
            "rejected": dict(self.rejected),
        }

    def readings(self) -> dict[str, float | dict[str, float]]:
        """The counters for the metrics endpoint (read from another thread, so `rejected` is copied)."""
        rejected = {reason: float(count) for reason, count in dict(self.rejected).items()}
        return {
            "accepted": self.accepted,
            "published": self.published,
            "too_large": self.too_large,
            "rejected": rejected,
        }


@dataclasses.dataclass(slots=True, eq=False)
class _Slot:
    """One connection being served, for the cap: what may be closed to make room for a new one."""

    transport: asyncio.WriteTransport
    # loop time since which it waits for a request (between requests, or its head arriving); None while
    # the body of an authorised request is read or a request is answered: not evictable then
    waiting_since: float | None
    trusted: bool = False  # made a request with the right secret: never evicted


class _SlowRequestError(Exception):
    """A request's head and body did not arrive within request_timeout_s."""


class _UnreadReplyError(OSError):
    """A reply could not be handed to the client within request_timeout_s: it does not read (an
    OSError, so the handlers that end a connection whose client went away end this one too)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]


class WebhookReceiver:
    """Request handling and batching; everything that is not socket I/O."""

    def __init__(self, settings: TykWebhookSettings, publisher: BridgePublisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.digester = KeyDigester(settings.key_hash_salt.get_secret_value().encode())
        self.secret = settings.secret.get_secret_value().encode()
        self.secret_header = settings.secret_header.lower().encode()
        self.stats = WebhookStats()
        # A flood of bad posts must not become a flood of log lines: one per reason per period.
        self.log_throttle = LogThrottle()
        self.listening = False
        self.pending: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.pending_count = 0
        self.abandon = threading.Event()
        # One thread owns the ZeroMQ socket: every publish, heartbeat and subscription read.
        self.zmq_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tyk-webhook-zmq")

    def handle(self, request: h11.Request, body: bytes, too_large: bool) -> Reply:
        reply = self.head_reply(request)
        if reply is not None:
            return reply
        if too_large:
            return self._reject(413, "too_large", f"body over {self.settings.max_body_bytes} bytes")
        if not self.listening:
            return self._reject(503, "no_subscriber", f"no firehose subscriber for {EVENT_PREFIX}")
        query = dict(parse_qsl(urlsplit(request.target.decode("latin-1")).query))
        result = webhook_event(body, query, time.time_ns(), self.digester)
        if not isinstance(result, WebhookEvent):
            return self._reject(400, result.reason, result.detail)
        self.stats.accepted += 1
        self.pending[result.topic].append(result.record)
        self.pending_count += 1
        return Reply(200, {"accepted": 1})

    def head_reply(self, request: h11.Request) -> Reply | None:
        """The answer `request` gets whatever its body holds (a bad target, /healthz or /stats, the
        wrong path or method, no shared secret), or None when its body decides."""
        try:
            target = urlsplit(request.target.decode("latin-1"))
        except ValueError as exc:  # e.g. `//[x/tyk/events`: an authority with an unclosed IPv6 bracket
            return self._reject(400, "bad_target", f"{request.target[:64]!r}: {exc}")
        if request.method == b"GET" and target.path in ("/healthz", "/stats"):
            if target.path == "/stats":
                return Reply(200, self.stats.as_dict())
            return Reply(200 if self.listening else 503, {"subscribed": self.listening})
        if target.path != self.settings.path:
            return self._reject(404, "not_found", target.path)
        if request.method not in _ACCEPT_METHODS:
            return self._reject(405, "method", request.method.decode("latin-1"))
        if self.secret and not self._authorised(request):
            return self._reject(401, "unauthorized", "missing or wrong shared secret")
        return None

    def trusts(self, request: h11.Request) -> bool:
        """Whether `request` carries the shared secret (none set: nobody is trusted, anyone may post)."""
        return bool(self.secret) and self._authorised(request)

    def _authorised(self, request: h11.Request) -> bool:
        given = [value for name, value in request.headers if name == self.secret_header]
        return len(given) == 1 and hmac.compare_digest(given[0], self.secret)

    def _reject(self, status: int, reason: str, detail: str) -> Reply:
        self.stats.rejected[reason] += 1
        held = self.log_throttle.allow(reason)
        if held is not None:
            log.warning(
                "webhook rejected status=%d reason=%s detail=%s total=%d (not logged since the last: %d)",
                status,
                reason,
                detail,
                self.stats.rejected[reason],
                held,
            )
        return Reply(status, {"rejected": reason, "detail": detail})

    # ------------------------------------------------------------------ publishing (zmq thread)

    def take_pending(self) -> dict[str, list[dict[str, Any]]]:
        pending, self.pending = self.pending, collections.defaultdict(list)
        self.pending_count = 0
        return pending

    def publish(self, pending: dict[str, list[dict[str, Any]]]) -> None:
        size = self.settings.message_records
        for topic, records in pending.items():
            for start in range(0, len(records), size):
                self._publish_chunk(topic, records[start : start + size])

    def _publish_chunk(self, topic: str, chunk: list[dict[str, Any]]) -> None:
        """Publish `chunk`; a message that cannot be sent is retried one event at a time, so an event
        that slipped past validation costs only itself, counted (`publish_failed`) and logged."""
        try:
            sent = self.publisher.publish(topic, chunk, self.abandon)
        except Exception as exc:  # Tyk was told these were accepted: never drop them silently
            if len(chunk) > 1:
                for record in chunk:
                    self._publish_chunk(topic, [record])
                return
            self.stats.rejected["publish_failed"] += 1
            log.error(  # one line per event, no trace: the reason is in the message
                "webhook event accepted but not published topic=%s error=%s: %s total=%d",
                topic,
                type(exc).__name__,
                str(exc)[:200],
                self.stats.rejected["publish_failed"],
            )
            return
        self.stats.published += sent.records
        self.stats.too_large += sent.too_large
        if sent.stopped:
            self.stats.rejected["abandoned_at_shutdown"] += len(chunk) - sent.records - sent.too_large

    def tick(self) -> bool:
        self.publisher.maybe_heartbeat()
        return self.publisher.has_subscriber(EVENT_PREFIX)


class WebhookServer:
    """The asyncio side: connections, the flush timer, the tick that tracks subscribers."""

    def __init__(
        self, receiver: WebhookReceiver, host: str, port: int, max_connections: int | None = None
    ) -> None:
        self.receiver = receiver
        self.host, self.port = host, port
        # what the descriptor limit holds of --max-connections (connection_budget)
        self.max_connections = max_connections or receiver.settings.max_connections
        self.loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._publishing: list[asyncio.Future[None]] = []
        self._slots: set[_Slot] = set()  # connections being served now (max_connections)

    async def run(self, stop: threading.Event) -> None:
        self.loop = asyncio.get_running_loop()
        server = await asyncio.start_server(self._connection, self.host, self.port, backlog=_ACCEPT_BACKLOG)
        log.info("tyk webhook listening on http://%s:%d%s", self.host, self.port, self.receiver.settings.path)
        try:
            while not stop.is_set():
                self.receiver.listening = await self.loop.run_in_executor(
                    self.receiver.zmq_thread, self.receiver.tick
                )
                self._publishing = [f for f in self._publishing if not f.done()]
                await asyncio.sleep(_TICK_S)
        finally:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)
            self._flush()
            await self._drain_publishing()

    async def _drain_publishing(self) -> None:
        if not self._publishing:
            return
        _done, not_done = await asyncio.wait(self._publishing, timeout=_SHUTDOWN_DRAIN_S)
        if not_done:
            self.receiver.abandon.set()
            await asyncio.wait(not_done)

    def _schedule_flush(self) -> None:
        if self.receiver.pending_count >= self.receiver.settings.message_records:
            self._flush()
        elif self._flush_handle is None and self.loop is not None:
            self._flush_handle = self.loop.call_later(self.receiver.settings.flush_ms / 1000, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self.receiver.pending_count and self.loop is not None:
            pending = self.receiver.take_pending()
            future = self.loop.run_in_executor(self.receiver.zmq_thread, self.receiver.publish, pending)
            future.add_done_callback(self._published)
            self._publishing.append(future)

    def _published(self, future: asyncio.Future[None]) -> None:
        # publish() counts what it cannot send; anything escaping it is a bug, logged, never silent
        if not future.cancelled() and future.exception() is not None:
            log.error("webhook publish failed", exc_info=future.exception())

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._slots) >= self.max_connections and not self._evict():
            limit = self.max_connections
            reply = self.receiver._reject(503, "too_many_connections", f"over {limit} connections at once")
            with contextlib.suppress(OSError):
                writer.write(_closing_reply(reply))
                await asyncio.wait_for(writer.drain(), 2.0)
            await self._close(writer)
            return
        slot = _Slot(writer.transport, asyncio.get_running_loop().time())
        self._slots.add(slot)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            await self._serve(conn, reader, writer, slot)
        except h11.RemoteProtocolError as exc:
            if slot not in self._slots:  # evicted mid-head (_evict): counted there, nothing to answer
                return
            self.receiver.stats.rejected["bad_http"] += 1
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(h11.LocalProtocolError, OSError):
                    await self._send(conn, writer, Reply(exc.error_status_hint, {"rejected": "bad_http"}))
        except _SlowRequestError:
            timeout = self.receiver.settings.request_timeout_s
            reply = self.receiver._reject(
                408, "request_timeout", f"request not received within {timeout:g} s"
            )
            with contextlib.suppress(OSError):
                writer.write(_closing_reply(reply))
                await asyncio.wait_for(writer.drain(), 2.0)
        except _UnreadReplyError:  # before OSError: counted, then closed like a client gone away
            timeout = self.receiver.settings.request_timeout_s
            self.receiver._reject(408, "reply_unread", f"replies not read within {timeout:g} s")
            writer.transport.abort()  # close() would keep the socket until the unread replies are sent
        except OSError:  # the client went away (reset, timed out, not connected): nothing to answer
            pass
        finally:
            self._slots.discard(slot)
            await self._close(writer)

    def _evict(self) -> bool:
        """Make room for a new connection: close the one that has waited longest for a request among
        those that never sent the shared secret. False when there is none (the new one is refused).

        Without this, connections that send nothing (each kept for the 120 s idle timeout, or for ever
        with a GET now and then) held every slot, and every webhook Tyk sent was answered 503."""
        evictable = [s for s in self._slots if s.waiting_since is not None and not s.trusted]
        if not evictable:
            return False
        victim = min(evictable, key=lambda s: s.waiting_since or 0.0)
        self._slots.discard(victim)
        victim.transport.abort()  # its pending read ends: the task closes it and gives up its slot
        self.receiver._reject(503, "evicted", "a connection waiting for a request closed to make room")
        return True

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(OSError):
            await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _serve(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: _Slot
    ) -> None:
        loop = asyncio.get_running_loop()
        request: h11.Request | None = None
        body = bytearray()
        limit = self.receiver.settings.max_body_bytes
        timeout_s = self.receiver.settings.request_timeout_s
        started: float | None = None  # when the first bytes of the request being read arrived
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if started is None:  # between requests: the keep-alive idle timeout
                    data = await asyncio.wait_for(reader.read(65_536), _IDLE_TIMEOUT_S)
                    started = loop.time()
                else:  # within a request: one deadline for head and body, however they dribble in
                    try:
                        data = await asyncio.wait_for(
                            reader.read(65_536), max(0.0, started + timeout_s - loop.time())
                        )
                    except TimeoutError:
                        raise _SlowRequestError from None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request, body = event, bytearray()
                if self.receiver.trusts(event):
                    slot.trusted = True
                    slot.waiting_since = None
                if _declared_length(event) > limit:
                    await self._refuse_large(conn, reader, writer, event)
                    return
                # A body that costs more than it says is read (and parsed by h11) only when it decides
                # the answer: one of tiny chunks costs ~10 us of this loop per chunk, and anyone, without
                # the secret, sent one. A short Content-Length body is read, and the connection kept.
                early = self.receiver.head_reply(event) if _costly_body(event) else None
                if early is not None:
                    await self._answer_and_close(conn, reader, writer, early)
                    return
            elif isinstance(event, h11.Data) and request is not None:
                if len(body) + len(event.data) > limit:
                    await self._refuse_large(conn, reader, writer, request)
                    return
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                if slot.trusted or not self.receiver.secret:
                    # kept while answered; any other may be closed for room even then (it is
                    # answered a refusal, /healthz or /stats: nothing it sent is lost)
                    slot.waiting_since = None
                reply = self.receiver.handle(request, bytes(body), too_large=False)
                if reply.status == 200 and "accepted" in reply.body:
                    self._schedule_flush()
                await self._send(conn, writer, reply)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
                started = None
                slot.waiting_since = loop.time()
            else:  # ConnectionClosed, or PAUSED (cannot happen: each cycle is answered before the next)
                return

    async def _refuse_large(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
    ) -> None:
        """Answer a body over the limit (413, or whatever the head already earns) without reading it."""
        await self._answer_and_close(conn, reader, writer, self.receiver.handle(request, b"", too_large=True))

    async def _answer_and_close(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: Reply
    ) -> None:
        """Answer a request whose body is not read: reply, close our side, then discard at most
        _LINGER_BYTES for _LINGER_S so the client can read the answer before the connection is reset,
        and let the caller close."""
        await self._send(conn, writer, reply, close=True)
        if writer.can_write_eof():
            writer.write_eof()  # ENOTCONN when the client reset already: _connection's OSError handler
        deadline = asyncio.get_running_loop().time() + _LINGER_S
        discarded = 0
        with contextlib.suppress(OSError):
            while discarded < _LINGER_BYTES:
                remaining = deadline - asyncio.get_running_loop().time()
                chunk = await asyncio.wait_for(reader.read(65_536), max(0.0, remaining))
                if not chunk:
                    return
                discarded += len(chunk)

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply, *, close: bool = False
    ) -> None:
        """Write `reply`; _UnreadReplyError when the client does not take it within request_timeout_s
        (pipelined requests whose answers are never read held the connection for ever)."""
        payload = json.dumps(reply.body).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
        if close:
            headers.append(("connection", "close"))
        writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=payload)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        try:
            await asyncio.wait_for(writer.drain(), self.receiver.settings.request_timeout_s)
        except TimeoutError:
            raise _UnreadReplyError from None


def _declared_length(request: h11.Request) -> int:
    """The request's Content-Length (h11 has checked it is digits), 0 when it has none (chunked)."""
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return 0


def _costly_body(request: h11.Request) -> bool:
    """Whether reading the body may cost more than a few reads: chunked (any Transfer-Encoding),
    or a Content-Length over _SHORT_BODY_BYTES."""
    chunked = any(name == b"transfer-encoding" for name, _ in request.headers)
    return chunked or _declared_length(request) > _SHORT_BODY_BYTES


def _closing_reply(reply: Reply) -> bytes:
    """A whole response for a connection h11 cannot answer on (no request parsed yet), then closed."""
    payload = json.dumps(reply.body).encode()
    head = (
        f"HTTP/1.1 {reply.status} {http.HTTPStatus(reply.status).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        msg = f"--listen must be HOST:PORT, got {listen!r}"
        raise ConfigurationError(msg)
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (":8089" means every interface)


def exposure_error(settings: TykWebhookSettings, host: str) -> str | None:
    """Why the receiver must not start on `host` (reachable by other machines, no secret), or None."""
    if settings.secret.get_secret_value() or is_loopback(host):
        return None
    return (
        f"--listen {settings.listen} accepts connections from other machines, and without --secret "
        "anyone who reaches it can publish events onto the firehose. Set --secret (or TYKPULSE_SECRET) "
        f"and send it from Tyk in the {settings.secret_header} header, or listen on 127.0.0.1."
    )


def check_exposure(settings: TykWebhookSettings, host: str) -> None:
    """Refuse a bind other machines can reach without a shared secret; warn on loopback without one."""
    problem = exposure_error(settings, host)
    if problem is not None:
        raise ConfigurationError(problem)
    if not settings.secret.get_secret_value():
        log.warning(
            "tyk webhook has no --secret: any local process can publish events; set one before exposing it"
        )


def connection_budget(max_connections: int) -> int:
    """`max_connections`, or as many as the process's descriptor limit holds with room to spare.

    The soft limit is raised to the hard one first (as Go programs do at start). Connections past
    the limit were never refused by the cap: accept() failed with EMFILE, and asyncio logged a
    traceback for each of up to _ACCEPT_BACKLOG attempts at every wake-up (34 MB of log in 15 s,
    the loop too busy to answer, for as long as a peer held its connections open). Room is kept for
    the bursts accepted before a new connection can evict an idle one (_BURSTS_BEFORE_ROOM): with
    one burst of 512 kept, a loop slowed by other work accepted a second before the first evicted
    anything, and 1,000 idle connections still hit the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return max_connections
    budget = max(1, soft - _BURSTS_BEFORE_ROOM * _ACCEPT_BACKLOG - _SPARE_DESCRIPTORS)
    if budget < max_connections:
        log.warning(
            "--max-connections %d lowered to %d: the descriptor limit is %d (raise it, e.g. LimitNOFILE)",
            max_connections,
            budget,
            soft,
        )
        return budget
    return max_connections


def serve(
    settings: TykWebhookSettings,
    publisher: BridgePublisher,
    stop: threading.Event,
    stats: WebhookStats | None = None,
) -> WebhookStats:
    """Run the receiver until `stop` is set; publishes what was accepted before returning.

    Counts into `stats` when given (the metrics endpoint reads it while this runs).
    Raises ConfigurationError before binding for a bad or unsafe --listen (see check_exposure).
    """
    host, port = parse_listen(settings.listen)
    check_exposure(settings, host)
    receiver = WebhookReceiver(settings, publisher)
    if stats is not None:
        receiver.stats = stats
    try:
        server = WebhookServer(receiver, host, port, connection_budget(settings.max_connections))
        asyncio.run(server.run(stop))
    finally:
        receiver.zmq_thread.shutdown(wait=True)
    return receiver.stats
