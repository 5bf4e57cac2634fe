"""Who may do what on the endpoint: one read-only user, one read-write user.

The read-write user exists only while a writer password is configured. A
read-only request (GET, `readonly=1`) runs as a reader whoever sends it.
Passwords are compared in constant time and never logged.

Browsers are kept out before credentials are looked at, with ACCESS_DENIED
(HTTP 403), because a page on any site can make the user's browser send
requests to 127.0.0.1:
- a request with an `Origin` header not in `serve_allowed_origins` (empty by
  default: no browser page may use the endpoint; clickhouse-connect and
  Grafana's backend send no Origin), and a request a browser marks
  `Sec-Fetch-Site: cross-site|same-site` without an allowed Origin;
- a `Host` that is not localhost, a loopback address, the address the client
  connected to, the configured listen host or one of `serve_allowed_hosts`:
  a DNS-rebinding page reaches 127.0.0.1 under its own name. A request with
  no Host (HTTP/1.0 tools; browsers always send one) is let through.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Mapping

from sinks.clickhouse.serve.errors import ACCESS_DENIED, AUTHENTICATION_FAILED, ServeError
from sinks.clickhouse.serve.handles import Role
from sinks.clickhouse.serve.request import Credentials
from sinks.clickhouse.serve.settings import ServeSettings

log = logging.getLogger(__name__)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _origin_key(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _host_name(host: str) -> str:
    """The name or address of a Host header value, without port, brackets or a final dot, lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


class Access:
    def __init__(self, settings: ServeSettings) -> None:
        self.reader = (settings.reader_user, settings.reader_password.get_secret_value())
        writer_password = settings.writer_password
        self.writer: tuple[str, str] | None = None
        if writer_password is not None:
            self.writer = (settings.writer_user, writer_password.get_secret_value())
        self.origins = frozenset(_origin_key(o) for o in settings.serve_allowed_origins)
        listen_host = settings.serve_listen.strip().rpartition(":")[0]
        self.hosts = frozenset(
            {"localhost", _host_name(listen_host or "127.0.0.1")}
            | {_host_name(h) for h in settings.serve_allowed_hosts}
        )

    def check_browser(self, headers: Mapping[str, str], local_address: str) -> str | None:
        """Raise ACCESS_DENIED for a foreign Origin or Host; the allowed Origin to echo, if any.

        `headers` has lower-case names; `local_address` is the address the client connected to.
        """
        origin = headers.get("origin")
        allowed = origin is not None and _origin_key(origin) in self.origins
        if origin is not None and not allowed:
            msg = "Requests from browser pages are refused: the Origin is not in serve_allowed_origins"
            raise ServeError(ACCESS_DENIED, msg)
        fetch_site = headers.get("sec-fetch-site", "").strip().lower()
        if fetch_site in ("cross-site", "same-site") and not allowed:
            msg = "Cross-site browser requests are refused (Sec-Fetch-Site)"
            raise ServeError(ACCESS_DENIED, msg)
        host = headers.get("host")
        if host is not None and not self._host_allowed(_host_name(host), local_address):
            msg = (
                "The Host header names neither loopback nor this endpoint's address; a name clients "
                "use to reach it must be listed with --serve-allowed-hosts (TYKPULSE_SERVE_ALLOWED_HOSTS)"
            )
            raise ServeError(ACCESS_DENIED, msg)
        return origin if allowed else None

    def _host_allowed(self, name: str, local_address: str) -> bool:
        if name in self.hosts:
            return True
        # an address cannot be rebound to another machine the way a DNS name can
        address = _ip(name)
        return address is not None and (address.is_loopback or address == _ip(local_address))

    @property
    def writable(self) -> bool:
        return self.writer is not None

    def role(self, credentials: Credentials, *, readonly_request: bool) -> Role:
        """The role these credentials get (raises ServeError AUTHENTICATION_FAILED)."""
        user, password = credentials.user, credentials.password
        if self.writer is not None and user == self.writer[0] and _same(password, self.writer[1]):
            return Role.READER if readonly_request else Role.WRITER
        if user == self.reader[0] and _same(password, self.reader[1]):
            return Role.READER
        log.warning("authentication failed user=%r", credentials.user)  # %r: a name cannot forge log lines
        msg = (
            f"{credentials.user}: Authentication failed: password is incorrect, "
            "or there is no user with such name"
        )
        raise ServeError(AUTHENTICATION_FAILED, msg)
