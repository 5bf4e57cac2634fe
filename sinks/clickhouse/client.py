"""One way to open ClickHouse for every DSN: embedded chDB or a server over HTTP(S).

`chdb:///abs/path` (or `chdb://relative/path`, or a bare filesystem path) opens the
embedded engine in this process; chDB allows one process per directory, so
anything that must read while a worker writes goes through the worker.
`http://` and `https://` DSNs go to a ClickHouse server with clickhouse-connect's
HTTP client, user, password, database and TLS options taken from the DSN.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from sinks.clickhouse.dedup_repair import forget_unwritten_blocks
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.errors import SinkRejectedError, SinkUnavailableError
from sinks.owned_directory import owned_directory
from sinks.redact import redact


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A parsed DSN: `embedded_path` for chDB, else the server DSN."""

    dsn: str
    embedded_path: Path | None

    @property
    def is_embedded(self) -> bool:
        return self.embedded_path is not None

    def describe(self) -> str:
        """The DSN without credentials, safe to log."""
        if self.embedded_path is not None:
            return f"chdb://{self.embedded_path}"
        parts = urlsplit(self.dsn)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


def parse_dsn(dsn: str) -> Target:
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if scheme in ("http", "https"):
        return Target(dsn, None)
    if scheme == "chdb":
        location = dsn[len("chdb://") :]
    elif scheme == "":
        location = dsn
    else:
        msg = f"unsupported ClickHouse DSN scheme {scheme!r}: use chdb://, http:// or https://"
        raise SinkRejectedError(msg)
    if not location:
        msg = "chdb DSN needs a path, e.g. chdb:///var/lib/tykpulse/clickhouse"
        raise SinkRejectedError(msg)
    # absolute, not resolved: a link at the path itself must still be seen as one (owned_directory)
    return Target(dsn, Path(os.path.abspath(Path(location).expanduser())))


def http_options(settings: ClickHouseSettings) -> dict[str, Any]:
    """clickhouse-connect options for an http(s) DSN (options in the DSN's query string apply too)."""
    options: dict[str, Any] = {
        # clickhouse-connect takes TLS from the port (443/8443), not from the DSN's
        # scheme: without this an https:// DSN on another port would speak plain HTTP.
        "interface": urlsplit(settings.clickhouse_dsn).scheme.lower(),
        "connect_timeout": settings.clickhouse_connect_timeout_s,
        "send_receive_timeout": settings.clickhouse_send_receive_timeout_s,
    }
    if settings.clickhouse_password is not None:
        options["password"] = settings.clickhouse_password.get_secret_value()
    if not settings.clickhouse_verify_tls:
        options["verify"] = False
    for option in ("ca_cert", "client_cert", "client_cert_key"):
        value = getattr(settings, f"clickhouse_{option}")
        if value:
            options[option] = value
    return options


def prepare_embedded(path: Path) -> None:
    """Before an engine opens `path`: refuse a directory not this user's own, and forget the insert
    tokens of parts a killed engine never wrote (dedup_repair). Every embedded open goes through here."""
    owned_directory(path)
    forget_unwritten_blocks(path)


def connect(settings: ClickHouseSettings, *, database: str | None = None) -> Any:
    """A clickhouse-connect client for the configured DSN (raises SinkError subclasses)."""
    target = parse_dsn(settings.clickhouse_dsn)
    try:
        if target.embedded_path is not None:
            prepare_embedded(target.embedded_path)
            return clickhouse_connect.get_client(dsn=f"chdb://{target.embedded_path}", database=database)
        return clickhouse_connect.get_client(dsn=target.dsn, database=database, **http_options(settings))
    except ClickHouseError as exc:
        msg = f"cannot open ClickHouse at {target.describe()}: {redact(exc)}"
        raise SinkUnavailableError(msg) from exc
    except PermissionError as exc:  # not ours (prepare_embedded), or not readable: no retry helps
        msg = f"cannot open ClickHouse at {target.describe()}: {redact(exc)}"
        raise SinkRejectedError(msg) from exc
    except OSError as exc:
        msg = f"cannot open ClickHouse at {target.describe()}: {redact(exc)}"
        raise SinkUnavailableError(msg) from exc
