"""Deliver alerts to Alertmanager's API v2 (`POST /api/v2/alerts`, a JSON list of alerts).

Firing alerts are re-sent at every evaluation, so a failed POST of them is
only logged. Resolved alerts are sent once: a failed POST keeps them queued
(up to MAX_QUEUED) and they go out with the next successful POST, ahead of the
firing ones.

A POST takes at most its timeout from connection to answer, however the answer
arrives, and at most MAX_ANSWER_BYTES of the answer are read.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import unquote, urlunsplit

from pipelines.alerts.state import Alert, safe_text
from sinks.redact import checked_url, redact

log = logging.getLogger(__name__)

ALERTS_PATH: Final = "/api/v2/alerts"
MAX_QUEUED: Final = 1000
MAX_ANSWER_BYTES: Final = 64 * 1024  # Alertmanager answers a POST with a few bytes
MAX_EXPLANATION_CHARS: Final = 300


def alerts_url(webhook: str) -> str:
    """`http://am:9093` -> `http://am:9093/api/v2/alerts`; a URL with a path is used as given.

    The URL keeps no user name or password (see basic_auth): urllib cannot send them from a URL.
    """
    parts = checked_url(webhook, "webhook URL")
    if parts.scheme not in ("http", "https"):
        msg = f"webhook must be an http(s) URL, got {redact(webhook)!r}"
        raise ValueError(msg)
    if parts.path in ("", "/"):
        parts = parts._replace(path=ALERTS_PATH)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def basic_auth(webhook: str) -> dict[str, str]:
    """The Authorization header for the user:password@ of `webhook`, if it has one."""
    parts = checked_url(webhook, "webhook URL")
    if parts.username is None:
        return {}
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery, never followed: urllib would resend the Authorization
    header to whatever host the redirect names, and turn the POST into a GET without its alerts
    (which then counted as delivered)."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _Deadline:
    """The sockets of one POST, shut down from a timer thread when its time is up.

    A socket timeout bounds one read, so an answer trickled a byte at a time (or a TLS handshake
    trickled so), or one that never ends, would hold the POST, and every rule evaluation behind it,
    for ever. The raw socket is taken as it connects, before any handshake, and one that connects
    after the time is up is shut at once.
    """

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._expired = False

    def connect(self, address: tuple[str, int], *args: Any) -> socket.socket:
        sock = socket.create_connection(address, *args)
        with self._lock:
            self._sockets.append(sock)
            if self._expired:
                _shut(sock)
        return sock

    def expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _DeadlineHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """HTTP(S) connections whose sockets a _Deadline holds."""

    def __init__(self, deadline: _Deadline) -> None:
        urllib.request.HTTPSHandler.__init__(self)
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection(http.client.HTTPConnection), req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection(http.client.HTTPSConnection), req)

    def _connection(
        self, kind: type[http.client.HTTPConnection]
    ) -> Callable[..., http.client.HTTPConnection]:
        def build(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            connection = kind(host, **kwargs)
            # http.client makes its socket through this attribute (not in the type stubs)
            connection._create_connection = self._deadline.connect  # type: ignore[attr-defined]
            return connection

        return build


class AlertmanagerClient:
    def __init__(self, webhook: str, timeout_s: float = 10.0) -> None:
        self.url = alerts_url(webhook)
        self._headers = {"Content-Type": "application/json", **basic_auth(webhook)}
        self.timeout_s = timeout_s
        self._resolved: deque[Alert] = deque(maxlen=MAX_QUEUED)
        self.sent = 0
        self.failures = 0

    def send(self, alerts: Sequence[Alert]) -> bool:
        """POST firing alerts and every resolved alert not yet delivered; True when delivered."""
        self._resolved.extend(a for a in alerts if a.resolved)
        # Alertmanager stores a POST's alerts in order, and of two with the same labels the later wins:
        # a series resolved while Alertmanager was unreachable, and firing again since, must end firing.
        batch = list(self._resolved) + [a for a in alerts if not a.resolved]
        if not batch:
            return True
        body = json.dumps([a.to_alertmanager() for a in batch]).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in alerts_url
            self.url, data=body, method="POST", headers=self._headers
        )
        # a deadline and an opener of its own per POST: a timer that fires late touches no other POST
        deadline = _Deadline()
        opener = urllib.request.build_opener(_NoRedirects(), _DeadlineHandler(deadline))
        timer = threading.Timer(self.timeout_s, deadline.expire)
        timer.name, timer.daemon = "tykpulse-webhook-deadline", True
        timer.start()
        try:
            with opener.open(request, timeout=self.timeout_s) as response:
                response.read(MAX_ANSWER_BYTES)
        # HTTPException: an answer that is not HTTP or is cut short (BadStatusLine, IncompleteRead, ...),
        # which is neither an OSError nor a ValueError and would end `alerts run`.
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            self.failures += 1
            log.warning(
                "alerts not delivered url=%s alerts=%d error=%s%s",
                redact(self.url),
                len(batch),
                redact(exc),
                _explanation(exc),
            )
            return False
        finally:
            timer.cancel()
        self._resolved.clear()
        self.sent += len(batch)
        log.info("alerts delivered url=%s firing=%d resolved=%d", redact(self.url), *_counts(batch))
        return True


def _explanation(exc: BaseException) -> str:
    """What the receiver said of a refused POST (Alertmanager names the bad label or field in its
    400), at most MAX_EXPLANATION_CHARS of it: without it a refusal that repeats at every
    evaluation said only "Bad Request". Read within the POST's deadline, still running here."""
    if not isinstance(exc, urllib.error.HTTPError):
        return ""
    try:
        said = exc.read(MAX_EXPLANATION_CHARS).decode("utf-8", "replace")
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    said = safe_text(" ".join(said.split()), MAX_EXPLANATION_CHARS)
    return f" answer={redact(said)!r}" if said else ""


def _counts(batch: Sequence[Alert]) -> tuple[int, int]:
    resolved = sum(1 for a in batch if a.resolved)
    return len(batch) - resolved, resolved
