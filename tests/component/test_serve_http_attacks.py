"""Attacks on the ClickHouse HTTP endpoint's HTTP layer, over real sockets against a real server.

Malformed requests are written by hand on a raw socket, since HTTP clients fix them up. Every test
checks the status, the X-ClickHouse-Exception-Code header and that the server still answers after.
"""

from __future__ import annotations

import gzip
import http.client
import os
import resource
import socket
import struct
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lz4.frame
import pytest
from pydantic import SecretStr

from sinks.clickhouse.serve import ClickHouseHttpServer, Role, ServeError, ServeSettings
from sinks.clickhouse.serve.blocks import CHECKSUM, LZ4, checksum
from sinks.clickhouse.serve.sessions import Sessions
from tests.component import test_serve_endpoint as endpoint

pytestmark = pytest.mark.component

server = endpoint.server  # the fixture: a writable server on a free loopback port
WRITER = endpoint.WRITER
INSERT = "/?" + urllib.parse.urlencode({"query": "INSERT INTO t FORMAT TabSeparated"})


class Response:
    def __init__(self, head: bytes, body: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.head = head
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self.body = body

    @property
    def code(self) -> str | None:
        return self.headers.get("x-clickhouse-exception-code")


def connect(srv: ClickHouseHttpServer) -> socket.socket:
    return socket.create_connection(srv.address, timeout=10)


def read_response(sock: socket.socket) -> Response:
    """One response (a 100 Continue would be returned as one too)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            msg = f"connection closed before a response: {data!r}"
            raise AssertionError(msg)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    response = Response(head, b"")
    length = int(response.headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    response.body = body
    return response


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def request(
    path: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
    host: str = "127.0.0.1",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def writer_auth() -> dict[str, str]:
    return {"X-ClickHouse-User": WRITER[0], "X-ClickHouse-Key": WRITER[1]}


def assert_usable(srv: ClickHouseHttpServer) -> None:
    with connect(srv) as sock:
        sock.sendall(request("/?query=SELECT%2040%2B2", method="GET"))
        response = read_response(sock)
    assert (response.status, response.body) == (200, b"42\n")


# 1. credentials before the body; the decompressed size is bounded


def test_credentials_are_checked_before_the_body_is_read(server: ClickHouseHttpServer) -> None:
    """A 200 MB body announced with a wrong password: refused at once, no 100 Continue, nothing read."""
    with connect(server) as sock:
        headers = {
            "X-ClickHouse-User": WRITER[0],
            "X-ClickHouse-Key": "wrong",
            "Content-Length": str(200 << 20),
            "Expect": "100-continue",
        }
        sock.sendall(request(INSERT, headers))
        response = read_response(sock)  # the old server waited for the 200 MB here
        assert response.status == 403
        assert response.code == "516"
        assert response.headers["connection"] == "close"
        assert closed_by_server(sock)
    assert_usable(server)


def test_a_body_over_the_size_limit_is_refused_unread(server: ClickHouseHttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(request(INSERT, {**writer_auth(), "Content-Length": str(257 << 20)}))
        response = read_response(sock)
        assert (response.status, response.code) == (413, "36")
        assert closed_by_server(sock)
    assert_usable(server)


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[ClickHouseHttpServer]:
    """A writable server that accepts at most 1 MiB of decompressed body."""
    settings = ServeSettings(
        serve_listen="127.0.0.1:0", writer_password=SecretStr(WRITER[1]), serve_max_decompressed_mb=1
    )
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        yield srv


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


def _zstd(data: bytes) -> bytes:
    from backports import zstd

    return bytes(zstd.compress(data))


def _lz4(data: bytes) -> bytes:
    return bytes(lz4.frame.compress(data))


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", _gzip), ("zstd", _zstd), ("lz4", _lz4)])
def test_a_compression_bomb_is_refused_by_its_decompressed_size(
    small_server: ClickHouseHttpServer, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    bomb = compress(b"1\n" * (32 << 20))
    assert len(bomb) < 1 << 20  # well under the 256 MiB compressed limit
    with connect(small_server) as sock:
        headers = {**writer_auth(), "Content-Encoding": encoding, "Content-Length": str(len(bomb))}
        sock.sendall(request(INSERT, headers) + bomb)
        response = read_response(sock)
        assert (response.status, response.code) == (413, "36")
        assert b"after decompression" in response.body
        # the body was read whole, so the connection stays usable
        sock.sendall(request("/?query=SELECT%201", method="GET"))
        assert read_response(sock).body == b"1\n"
        assert_usable(small_server)


def test_a_block_claiming_a_huge_size_is_refused_before_allocation(
    small_server: ClickHouseHttpServer,
) -> None:
    """decompress=1: a 4 GiB 'uncompressed size' in a 30-byte block must not be believed."""
    payload = b"\x00" * 5
    block = struct.pack("<BII", LZ4, 9 + len(payload), 0xFFFFFFF0) + payload
    body = checksum(block) + block
    assert len(body) == CHECKSUM + len(block)
    path = INSERT + "&decompress=1"
    with connect(small_server) as sock:
        sock.sendall(request(path, {**writer_auth(), "Content-Length": str(len(body))}) + body)
        response = read_response(sock)
        assert (response.status, response.code) == (413, "36")
        assert_usable(small_server)


# 2. strict framing: no unbounded reads, no second request hidden in a body

SMUGGLED = b"GET /?query=SELECT%20%27smuggled%27 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Length": "-1"}, SMUGGLED),
        ({"Content-Length": "abc"}, SMUGGLED),
        ({"Content-Length": "+5"}, SMUGGLED),
        ({"Content-Length": str(len(SMUGGLED)), "Transfer-Encoding": "chunked"}, b"0\r\n\r\n" + SMUGGLED),
        ({"Transfer-Encoding": "gzip, chunked"}, b"0\r\n\r\n" + SMUGGLED),
        ({"Transfer-Encoding": "chunked"}, b"-1\r\n" + SMUGGLED),
        ({"Transfer-Encoding": "chunked"}, b"zz\r\n" + SMUGGLED),
        ({"Transfer-Encoding": "chunked"}, b"1" * 5000 + b"\r\n" + SMUGGLED),
        ({"Transfer-Encoding": "chunked"}, b"3\r\nabcXX" + SMUGGLED),
    ],
    ids=[
        "negative",
        "non-numeric",
        "signed",
        "both",
        "te-list",
        "chunk-neg",
        "chunk-hex",
        "chunk-long",
        "no-crlf",
    ],
)
def test_malformed_framing_is_refused_and_the_connection_closed(
    server: ClickHouseHttpServer, headers: dict[str, str], body: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(request("/?query=SELECT%201", {**writer_auth(), **headers}) + body)
        response = read_response(sock)
        assert (response.status, response.code) == (400, "36")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert b"smuggled" not in rest  # the body never ran as a second request
    assert_usable(server)


def test_a_well_formed_chunked_body_still_works(server: ClickHouseHttpServer) -> None:
    sql = b"SELECT 'chunked'"
    body = b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(sql), sql)
    with connect(server) as sock:
        sock.sendall(request("/", {**writer_auth(), "Transfer-Encoding": "chunked"}) + body)
        response = read_response(sock)
        assert (response.status, response.body) == (200, b"chunked\n")
        sock.sendall(request("/?query=SELECT%201", method="GET"))  # kept alive
        assert read_response(sock).body == b"1\n"


# 3. nothing the client sent is put into a response header unvalidated


@pytest.mark.parametrize("param", ["query_id", "default_format"])
def test_crlf_in_an_echoed_parameter_cannot_inject_a_header(server: ClickHouseHttpServer, param: str) -> None:
    path = "/?query=SELECT%201&" + param + "=x%0D%0ASet-Cookie:%20pwned=1"
    with connect(server) as sock:
        sock.sendall(request(path, method="GET"))
        response = read_response(sock)
        assert (response.status, response.code) == (400, "36")
        assert b"pwned" not in response.head
        assert "x-clickhouse-query-id" not in response.headers
    assert_usable(server)


def test_a_valid_query_id_is_echoed(server: ClickHouseHttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(request("/?query=SELECT%201&query_id=grafana-1.a:b_c", method="GET"))
        response = read_response(sock)
    assert response.status == 200
    assert response.headers["x-clickhouse-query-id"] == "grafana-1.a:b_c"


# 4. browsers: cross-site requests and DNS rebinding


@pytest.mark.parametrize(
    ("host", "headers"),
    [
        ("127.0.0.1", {"Origin": "http://evil.example"}),
        ("127.0.0.1", {"Origin": "null"}),
        ("127.0.0.1", {"Sec-Fetch-Site": "cross-site"}),
        ("rebind.evil.example:8123", {}),
        ("10.1.2.3", {}),
    ],
    ids=["origin", "null-origin", "fetch-site", "rebinding", "foreign-address"],
)
def test_browser_requests_from_other_sites_are_refused(
    server: ClickHouseHttpServer, host: str, headers: dict[str, str]
) -> None:
    """A page posting to 127.0.0.1 from its own site, or reaching it under its own name (rebinding)."""
    with connect(server) as sock:
        body = b"CREATE DATABASE pwned"
        sent = {**writer_auth(), **headers, "Content-Length": str(len(body))}
        sock.sendall(request("/", sent, host=host) + body)
        response = read_response(sock)
        assert (response.status, response.code) == (403, "497")
        assert "access-control-allow-origin" not in response.headers
    assert b"pwned" not in endpoint.raw(server, "GET", {"query": "SHOW DATABASES"})[2]
    assert_usable(server)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "127.0.0.1", "[::1]"])
def test_loopback_hosts_are_accepted(server: ClickHouseHttpServer, host: str) -> None:
    port = server.address[1]
    with connect(server) as sock:
        sock.sendall(request("/?query=SELECT%201", method="GET", host=f"{host}:{port}"))
        assert read_response(sock).status == 200


def test_allowed_origins_and_hosts_are_let_through(tmp_path: Path) -> None:
    settings = ServeSettings(
        serve_listen="127.0.0.1:0",
        # a comma-separated str as from the environment: pydantic's __init__ signature says list[str]
        serve_allowed_origins="https://grafana.example.com, http://localhost:3000",  # type: ignore[arg-type]
        serve_allowed_hosts=["clickhouse.internal"],
    )
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv, connect(srv) as sock:
        headers = {"Origin": "https://Grafana.example.com"}
        sock.sendall(request("/?query=SELECT%201", headers, method="GET", host="clickhouse.internal:8123"))
        response = read_response(sock)
        assert response.status == 200
        assert response.headers["access-control-allow-origin"] == "https://Grafana.example.com"
        sock.sendall(request("/?query=SELECT%201", {"Origin": "https://evil.example"}, method="GET"))
        assert read_response(sock).code == "497"
        assert_usable(srv)


# 5. sessions: readers cannot lock anyone out


def session_query(
    srv: ClickHouseHttpServer, session_id: str, *, writer: bool = False, check: bool = False
) -> Response:
    params = {"query": "SELECT 1", "session_id": session_id, "session_timeout": "3600"}
    if check:
        params["session_check"] = "1"
    with connect(srv) as sock:
        sock.sendall(
            request("/?" + urllib.parse.urlencode(params), writer_auth() if writer else {}, method="GET")
        )
        return read_response(sock)


def test_anonymous_sessions_cannot_starve_the_writer_or_each_other(server: ClickHouseHttpServer) -> None:
    for i in range(70):  # more than serve_max_sessions (64), each asking for an hour
        assert session_query(server, f"flood-{i}").status == 200
    kept = list(server.engine.sessions._sessions.values())
    assert len(kept) <= 16  # serve_max_sessions_per_user
    assert all(s.timeout_s <= 300 for s in kept)  # serve_max_session_timeout_s
    # the writer has a budget of its own
    assert session_query(server, "writer-1", writer=True).status == 200
    assert session_query(server, "writer-1", writer=True, check=True).status == 200
    assert_usable(server)


class _Handle:
    """What Sessions uses of a handle: its role, and close()."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_session_budgets_close_the_least_recently_used_idle_session() -> None:
    now = [0.0]
    sessions = Sessions(64, lambda: now[0], max_per_user=3, max_reader_timeout_s=300)
    opened: list[_Handle] = []

    def open_handle(role: Role) -> Any:
        opened.append(_Handle(role))
        return opened[-1]

    def borrow(session_id: str, role: Role = Role.READER, *, check: bool = False) -> Any:
        user = WRITER[0] if role is Role.WRITER else "default"
        return sessions.borrow(
            session_id, user=user, role=role, timeout_s=3600, check=check, open_handle=open_handle
        )

    def use(session_id: str, role: Role = Role.READER, *, check: bool = False) -> None:
        with borrow(session_id, role, check=check):
            now[0] += 1

    for i in range(5):
        use(f"r{i}")
    assert len(sessions) == 3
    assert [h.closed for h in opened] == [True, True, False, False, False]
    with pytest.raises(ServeError) as info:
        use("r0", check=True)
    assert info.value.code == 372
    for i in range(3):  # the writer's budget is untouched by the readers
        use(f"w{i}", Role.WRITER)
    assert len(sessions) == 6
    with borrow("r2"), borrow("r3"), borrow("r4"), pytest.raises(ServeError) as info:
        use("r5")  # a session running a query is never closed under it
    assert info.value.code == 202
    now[0] += 301  # past the readers' longest timeout, within the hour the writer asked for
    with pytest.raises(ServeError):
        use("r4", check=True)
    use("w0", Role.WRITER, check=True)


# 6. a query whose client is gone is not run


def test_a_read_only_query_is_not_run_once_its_client_has_gone(server: ClickHouseHttpServer) -> None:
    with connect(server) as sock:
        # corked, the request and the FIN leave in one segment: the server cannot see one without the other
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        sock.sendall(request("/?query=SELECT%20sleep(3)", method="GET"))
        sock.shutdown(socket.SHUT_WR)  # the client is done: it will read nothing more it asked for
        started = time.monotonic()
        assert closed_by_server(sock)  # no response, and without running the three-second query
        assert time.monotonic() - started < 2
    assert_usable(server)


def test_a_busy_process_with_many_descriptors_still_answers(tmp_path: Path) -> None:
    """The client-gone check polls; select() refused descriptors above 1023 with a 500."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.fail(f"the test needs 1200 file descriptors, the hard RLIMIT_NOFILE is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with ClickHouseHttpServer(tmp_path / "db", ServeSettings(serve_listen="127.0.0.1:0")) as srv:
            host, port = srv.address
            conn = http.client.HTTPConnection(host, port, timeout=30)
            conn.request("GET", "/?query=SELECT%2042")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"42\n")
            conn.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_request_head_is_bounded_in_bytes_not_only_in_lines(server: ClickHouseHttpServer) -> None:
    """http.server alone took 100 header lines of 64 KiB and kept them parsed while the request waited:
    250 such heads took a real db serve from 0.41 to 2.48 GB. Past MAX_HEAD_BYTES: 431, closed."""
    value = "a" * 4000
    with connect(server) as sock:
        # 50 headers of 4 KB: 200 KB, far inside http.server's own limits (old code: 200)
        big = {f"X-Padding-{i}": value for i in range(50)}
        sock.sendall(request("/?query=SELECT%201", big, method="GET"))
        response = read_response(sock)
        assert response.status == 431
        assert closed_by_server(sock)
    # a long query in the URL and ordinary headers still fit
    long_query = "/?" + urllib.parse.urlencode({"query": "SELECT 1 /* " + "x" * 60_000 + " */"})
    with connect(server) as sock:
        sock.sendall(request(long_query, {f"X-Padding-{i}": value for i in range(10)}, method="GET"))
        response = read_response(sock)
        assert (response.status, response.body) == (200, b"1\n")
    assert_usable(server)
