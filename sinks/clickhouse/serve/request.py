"""One HTTP request of ClickHouse's interface, parsed into what the engine runs.

The SQL is the `query` URL parameter followed by the request body (ClickHouse
concatenates them, so `?query=INSERT INTO t FORMAT Native` with the data as
body works, and so does the whole statement in the body). URL parameters that
are not transport parameters are settings; `param_<name>` are query
parameters. GET requests and `readonly=1|2` run read-only. Bodies are
decoded by Content-Encoding, then from ClickHouse's block format when
`decompress=1`; `compress=1` asks for the response in that format, each
bounded to `max_decompressed` bytes of output.

Values that go back to the client in response headers are validated here: a
`query_id` must match QUERY_ID (letters, digits, `_ . : -`, at most 128) and a
`default_format` must be a format name, else BAD_ARGUMENTS (HTTP 400).
Whether a request is read-only depends only on its method and URL, so the
server can authenticate before it reads the body.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import uuid
from collections.abc import Mapping
from typing import Final

from sinks.clickhouse.serve.blocks import decompress_blocks
from sinks.clickhouse.serve.codecs import DEFAULT_MAX_SIZE, choose_encoding, decode_body
from sinks.clickhouse.serve.errors import BAD_ARGUMENTS, NOT_IMPLEMENTED, ServeError

# stricter than ClickHouse (which takes any string): these are echoed in the X-ClickHouse-Query-Id header
QUERY_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
FORMAT_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
DEFAULT_FORMAT: Final = "TabSeparated"
DEFAULT_SESSION_TIMEOUT_S: Final = 60.0
MAX_SESSION_TIMEOUT_S: Final = 3600.0

# URL parameters the HTTP layer consumes; they never reach the engine as settings.
TRANSPORT_PARAMS: Final = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "quota_key",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "readonly",
        "stacktrace",
        "enable_http_compression",
        "network_compression_method",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "http_response_buffer_size",
        "http_wait_end_of_query",
        "http_native_compression_disable_checksumming_on_decompress",
        "cancel_http_readonly_queries_on_client_close",
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str
    explicit: bool


@dataclasses.dataclass(frozen=True, slots=True)
class HttpQuery:
    sql: bytes
    default_format: str
    database: str | None
    settings: dict[str, str]
    params: dict[str, str]
    query_id: str
    readonly: bool
    session_id: str | None = None
    session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S
    session_check: bool = False
    response_encoding: str | None = None
    # compress=1: the response in ClickHouse's compressed block format, with this method
    block_compression: str | None = None


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> Credentials:
    """From X-ClickHouse-User/Key, HTTP Basic auth or user/password parameters, else `default`.

    `headers` has lower-case names.
    """
    user = headers.get("x-clickhouse-user")
    if user is not None:
        return Credentials(user, headers.get("x-clickhouse-key", ""), True)
    auth = headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        name, _, password = decoded.partition(":")
        return Credentials(name or "default", password, True)
    if "user" in params:
        return Credentials(params["user"] or "default", params.get("password", ""), True)
    return Credentials("default", params.get("password", ""), "password" in params)


def _session_timeout(params: Mapping[str, str]) -> float:
    raw = params.get("session_timeout", "")
    try:
        value = float(raw) if raw else DEFAULT_SESSION_TIMEOUT_S
    except ValueError:
        value = DEFAULT_SESSION_TIMEOUT_S
    return min(max(value, 1.0), MAX_SESSION_TIMEOUT_S)


def _flag(params: Mapping[str, str], name: str) -> bool:
    return params.get(name, "0") not in ("", "0")


def is_readonly(method: str, params: Mapping[str, str]) -> bool:
    """GET requests and `readonly=1|2` run read-only."""
    return method == "GET" or _flag(params, "readonly")


def query_id(params: Mapping[str, str]) -> str:
    """The client's `query_id` (raises BAD_ARGUMENTS unless it matches QUERY_ID), or "" when none."""
    value = params.get("query_id", "")
    if value and not QUERY_ID.fullmatch(value):
        msg = "Invalid query_id: use at most 128 letters, digits and _ . : -"
        raise ServeError(BAD_ARGUMENTS, msg)
    return value


def _default_format(params: Mapping[str, str]) -> str:
    value = params.get("default_format") or DEFAULT_FORMAT
    if not FORMAT_NAME.fullmatch(value):
        msg = "Invalid default_format: not a format name"
        raise ServeError(BAD_ARGUMENTS, msg)
    return value


def parse_query(
    method: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    max_decompressed: int = DEFAULT_MAX_SIZE,
) -> HttpQuery | None:
    """The query to run, or None when the request carries no SQL (a health check)."""
    if headers.get("content-type", "").lower().startswith("multipart/form-data"):
        msg = "multipart/form-data requests (external data, form-encoded parameters) are not supported"
        raise ServeError(NOT_IMPLEMENTED, msg)
    client_query_id = query_id(params)
    default_format = _default_format(params)
    body = decode_body(body, headers.get("content-encoding"), max_decompressed)
    if _flag(params, "decompress"):
        body = decompress_blocks(body, max_decompressed)
    text = params.get("query", "").encode()
    sql = text + b"\n" + body if text and body else text or body
    if not sql.strip():
        return None
    settings = {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
    wants_compression = _flag(params, "enable_http_compression")
    return HttpQuery(
        sql=sql,
        default_format=default_format,
        database=params.get("database") or None,
        settings=settings,
        params={k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")},
        query_id=client_query_id or str(uuid.uuid4()),
        readonly=is_readonly(method, params),
        session_id=params.get("session_id") or None,
        session_timeout_s=_session_timeout(params),
        session_check=_flag(params, "session_check"),
        response_encoding=choose_encoding(headers.get("accept-encoding")) if wants_compression else None,
        block_compression=(params.get("network_compression_method") or "lz4")
        if _flag(params, "compress")
        else None,
    )
