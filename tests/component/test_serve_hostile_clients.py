"""Clients of the ClickHouse HTTP endpoint that leave, leak or smuggle, over real sockets against a
real server (the one `tykpulse db serve` runs) on a real engine.

1. A reader whose client goes away mid-query has its query cancelled in the engine: it leaves
   system.processes within seconds, its reader slot is free again, and the writer is untouched.
2. No credential reaches a log line, at DEBUG, whether it came in the URL (right or wrong) or in
   a header.
3. Settings sent outside the URL (headers, form fields, multipart) neither lift a reader's limits
   nor get past the gate: each is ignored or refused, as each test says.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import random
import select
import socket
import struct
import threading
import time
import tracemalloc
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr

from sinks.clickhouse.serve import ClickHouseHttpServer, Role, ServeError, ServeSettings, connections
from sinks.clickhouse.serve import server as server_module
from sinks.clickhouse.serve.budget import ByteBudget
from sinks.clickhouse.serve.cancellation import Ticket
from sinks.clickhouse.serve.engine import ChdbEngine, Outcome
from sinks.clickhouse.serve.redact import REDACTED, redact
from sinks.clickhouse.serve.request import HttpQuery
from tests.harness.tykpulse import wait_until

pytestmark = pytest.mark.component

RIGHT = f"right-{uuid.uuid4().hex}"  # the writer's password
WRONG = f"wrong-{uuid.uuid4().hex}"
WRITER = ("tykpulse", RIGHT)
MAX_EXECUTION_S = 600  # generous: only a cancellation ends the long queries below within seconds
GONE_WITHIN_S = 5.0
QUERY_WAS_CANCELLED = 394


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ClickHouseHttpServer]:
    settings = ServeSettings(
        serve_listen="127.0.0.1:0",
        writer_password=SecretStr(RIGHT),
        serve_reader_max_execution_s=MAX_EXECUTION_S,
        # one reader slot: a query left running after its client went would hold it
        serve_reader_max_concurrent=1,
    )
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        yield srv


def post(
    srv: ClickHouseHttpServer,
    sql: str | bytes,
    path: str = "/",
    *,
    writer: bool = False,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = dict(headers or {})
    if writer:
        headers = {"X-ClickHouse-User": WRITER[0], "X-ClickHouse-Key": WRITER[1], **headers}
    conn = http.client.HTTPConnection(*srv.address, timeout=60)
    try:
        conn.request("POST", path, body=sql.encode() if isinstance(sql, str) else sql, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def as_writer(srv: ClickHouseHttpServer, sql: str) -> bytes:
    status, _, body = post(srv, sql, writer=True)
    assert status == 200, body
    return body


def running(srv: ClickHouseHttpServer, mark: str) -> int:
    """Queries in the engine's process list whose text holds `mark` (the writer may read it)."""
    sql = (
        f"SELECT count() FROM system.processes WHERE query LIKE '%{mark}%' "
        "AND query NOT LIKE '%system.processes%'"
    )
    return int(as_writer(srv, sql))


def assert_usable(srv: ClickHouseHttpServer) -> None:
    """A reader's query answers at once: the one reader slot is free."""
    started = time.monotonic()
    status, _, body = post(srv, "SELECT 40 + 2")
    assert (status, body) == (200, b"42\n")
    assert time.monotonic() - started < GONE_WITHIN_S


def long_query() -> tuple[str, str]:
    """(a reader query running for hours on one core, a mark that finds it in system.processes)."""
    mark = str(random.randrange(10**14, 10**15))
    return f"SELECT count() FROM numbers(1000000000000) WHERE number != {mark}", mark


def send_raw(srv: ClickHouseHttpServer, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(srv.address, timeout=30)
    sock.sendall(head.encode() + b"\r\n\r\n" + body)
    return sock


def hold_unread_answer(srv: ClickHouseHttpServer, megabytes: int) -> socket.socket:
    """A reader that asks for an answer of `megabytes` MB and does not read it: the endpoint holds
    what the socket buffers (~4 MiB) do not take."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    holder.connect(srv.address)
    sql = b"SELECT repeat('x', 1000000) FROM numbers(%d)" % megabytes
    holder.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (len(sql), sql))
    return holder


def start_long_reader(srv: ClickHouseHttpServer, style: str) -> tuple[socket.socket, str]:
    sql, mark = long_query()
    if style == "get":
        path = "/?" + urllib.parse.urlencode({"query": sql})
        sock = send_raw(srv, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1")
    else:  # clickhouse-connect's way: POST, the SQL in the body, no readonly parameter
        body = sql.encode()
        sock = send_raw(srv, f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}", body)
    wait_until(lambda: running(srv, mark) == 1, "the reader's query to run", timeout=30)
    return sock, mark


def hang_up(sock: socket.socket, how: str) -> None:
    if how == "reset":  # SO_LINGER 0: close() sends RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# 1. a reader's query is cancelled when its client goes away


@pytest.mark.parametrize(("style", "how"), [("get", "close"), ("post", "close"), ("post", "reset")])
def test_a_reader_query_is_cancelled_when_its_client_goes_away(
    server: ClickHouseHttpServer, style: str, how: str
) -> None:
    cancelled = cast(float, server.stats.readings()["cancelled"])  # a scalar reading, not a labelled one
    sock, mark = start_long_reader(server, style)
    time.sleep(0.5)  # well into the query
    assert running(server, mark) == 1
    hang_up(sock, how)
    left = time.monotonic()
    wait_until(lambda: running(server, mark) == 0, "the query to leave system.processes", GONE_WITHIN_S)
    assert time.monotonic() - left < GONE_WITHIN_S
    # counted for db serve's /metrics (the query's own outcome is never sent: nobody is there)
    wait_until(lambda: server.stats.readings()["cancelled"] == cancelled + 1, "the cancel to be counted", 10)
    assert_usable(server)  # the reader slot it held is free
    as_writer(server, "CREATE TABLE default.after (x UInt64) ENGINE = MergeTree ORDER BY x")
    as_writer(server, "INSERT INTO default.after VALUES (1), (2)")
    assert as_writer(server, "SELECT count() FROM default.after") == b"2\n"


def test_a_reader_that_stays_gets_its_result(server: ClickHouseHttpServer) -> None:
    """Watching the socket while a query runs changes nothing for a client that waits."""
    status, headers, body = post(server, "SELECT sleep(1.5), 42")
    assert (status, body) == (200, b"0\t42\n"), body
    assert headers["x-clickhouse-format"] == "TabSeparated"


def test_a_writer_insert_lands_though_its_client_and_a_reader_went_away(server: ClickHouseHttpServer) -> None:
    """The cancellation aims at the reader's ticket only; a writer's insert is never cancelled."""
    as_writer(server, "CREATE DATABASE d")
    as_writer(server, "CREATE TABLE d.t (x UInt64) ENGINE = MergeTree ORDER BY x")
    # each insert into d.t sleeps 2 s in a view, so it is in flight while the reader is cancelled
    as_writer(server, "CREATE MATERIALIZED VIEW d.drag ENGINE = Null AS SELECT sleep(2) AS s FROM d.t")
    reader, mark = start_long_reader(server, "post")
    path = "/?" + urllib.parse.urlencode({"query": "INSERT INTO d.t FORMAT TabSeparated"})
    rows = b"1\n2\n3\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-User: {WRITER[0]}\r\n"
        f"X-ClickHouse-Key: {WRITER[1]}\r\nContent-Length: {len(rows)}"
    )
    insert = send_raw(server, head, rows)
    wait_until(lambda: running(server, "INTO d.t") == 1, "the insert to run", timeout=30)
    hang_up(reader, "close")
    hang_up(insert, "close")
    wait_until(lambda: running(server, mark) == 0, "the reader's query to be cancelled", GONE_WITHIN_S)
    # a cancelled insert would not land
    wait_until(lambda: as_writer(server, "SELECT count() FROM d.t") == b"3\n", "the insert to land", 30)
    # the rows are visible before the view's sleep ends; the engine closes only once the insert has
    wait_until(lambda: running(server, "INTO d.t") == 0, "the insert to end", 30)
    assert_usable(server)


def _reader_query(sql: str) -> HttpQuery:
    return HttpQuery(
        sql=sql.encode(),
        default_format="TabSeparated",
        database=None,
        settings={},
        params={},
        query_id=str(uuid.uuid4()),
        readonly=True,
    )


def test_a_cancelled_ticket_stops_its_own_query_and_no_other(tmp_path: Path) -> None:
    engine = ChdbEngine(tmp_path / "db", max_concurrent_readers=2)
    engine.open()
    try:
        tickets = [Ticket(), Ticket()]
        results: list[Outcome | BaseException | None] = [None, None]

        def read(i: int, sql: str) -> None:
            try:
                results[i] = engine.run(
                    _reader_query(sql), role=Role.READER, user="default", ticket=tickets[i]
                )
            except BaseException as exc:
                results[i] = exc

        def in_flight() -> set[str]:
            outcome = engine.run(
                _reader_query("SELECT query FROM system.processes"), role=Role.WRITER, user="tykpulse"
            )
            return {t.id for t in tickets if t.id.encode() in outcome.body}

        threads = [threading.Thread(target=read, args=(i, long_query()[0])) for i in range(2)]
        for thread in threads:
            thread.start()
        wait_until(lambda: in_flight() == {tickets[0].id, tickets[1].id}, "both queries to run", 30)
        engine.cancel(tickets[0])
        threads[0].join(GONE_WITHIN_S)
        assert isinstance(results[0], ServeError)
        assert results[0].code == QUERY_WAS_CANCELLED
        assert in_flight() == {tickets[1].id}
        engine.cancel(tickets[1])
        threads[1].join(GONE_WITHIN_S)
        assert isinstance(results[1], ServeError)
        # cancelled before it started: never run
        late = Ticket()
        engine.cancel(late)
        with pytest.raises(ServeError) as info:
            engine.run(_reader_query("SELECT 1"), role=Role.READER, user="default", ticket=late)
        assert info.value.code == QUERY_WAS_CANCELLED
    finally:
        engine.close()


# 2. no credential in any log line


@pytest.mark.parametrize(
    "line",
    [
        '"GET /?password={s}&query=SELECT%201 HTTP/1.1" 403 -',
        '"POST /?user=tykpulse&password={s} HTTP/1.1" 200 -',
        '"GET /?PASSWORD={s} HTTP/1.1" 403 -',
        '"GET /?pass%77ord={s} HTTP/1.1" 403 -',
        '"GET /?pass%2577ord={s} HTTP/1.1" 403 -',
        '"GET /?password%3D{s} HTTP/1.1" 403 -',
        '"GET /?quota_key={s}&x=1 HTTP/1.1" 200 -',
        '"GET /?password={s}%26more;x=\'"y HTTP/1.1" 403 -',
        "code 400, message Bad request syntax ('GET /?password={s} HTTP/1.1 junk')",
        "password={s} in a message",
    ],
)
def test_redact_removes_every_secret_value(line: str) -> None:
    redacted = redact(line.format(s=WRONG))
    assert WRONG not in redacted
    assert "more" not in redacted
    assert REDACTED in redacted


def test_redact_keeps_what_is_not_secret() -> None:
    line = '"GET /?user=alice&query=SELECT%201&database=d&password=x HTTP/1.1" 200 -'
    assert (
        redact(line) == f'"GET /?user=alice&query=SELECT%201&database=d&password={REDACTED} HTTP/1.1" 200 -'
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


CREDENTIAL_REQUESTS = [
    ("GET /?query=SELECT%201&password={wrong}", {}, 403),
    ("GET /?query=SELECT%201&user=tykpulse&password={wrong}", {}, 403),
    ("GET /?query=SELECT%201&user=tykpulse&password={right}", {}, 200),
    ("POST /?query=SELECT%201&user=tykpulse&password={right}", {"Content-Length": "0"}, 200),
    ("GET /?query=SELECT%201&pass%77ord={wrong}", {}, 403),
    ("GET /?query=SELECT%201&quota_key={wrong}", {}, 200),
    ("GET /?query=SELECT%201", {"X-ClickHouse-User": "tykpulse", "X-ClickHouse-Key": "{right}"}, 200),
    ("GET /?query=SELECT%201", {"X-ClickHouse-User": "tykpulse", "X-ClickHouse-Key": "{wrong}"}, 403),
    ("GET /?query=SELECT%201", {"Authorization": "basic:{right}"}, 200),
    ("GET /?query=SELECT%201", {"Authorization": "basic:{wrong}"}, 403),
    ("GET /?password={wrong} HTTP/1.1 junk", {}, 400),  # a bad request line, quoted in an error
]


def _send(srv: ClickHouseHttpServer, target: str, headers: dict[str, str]) -> int:
    target = target.format(right=RIGHT, wrong=WRONG)
    line = target if target.endswith("junk") else f"{target} HTTP/1.1"
    lines = [line, "Host: 127.0.0.1", "Connection: close"]
    for name, value in headers.items():
        value = value.format(right=RIGHT, wrong=WRONG)
        if value.startswith("basic:"):
            value = _basic("tykpulse", value[len("basic:") :])
        lines.append(f"{name}: {value}")
    response = b""
    with send_raw(srv, "\r\n".join(lines)) as sock:
        while chunk := sock.recv(65536):  # read to the end, so that closing resets nothing
            response += chunk
    if not response.startswith(b"HTTP/"):  # a request line without a version is answered in HTTP/0.9
        return 400 if b"Error code: 400" in response else 0
    return int(response.split(b" ", 2)[1])


def test_no_credential_reaches_the_log_at_debug(
    server: ClickHouseHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    for target, headers, status in CREDENTIAL_REQUESTS:
        assert _send(server, target, headers) == status, target

    def request_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.endswith("serve.server") and " http " in f" {r.msg}"]

    # each request's line is logged by the server's thread once it answered (the bad one's twice)
    wait_until(lambda: len(request_lines()) >= len(CREDENTIAL_REQUESTS) + 1, "every request line", 10)
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert RIGHT not in text
    assert WRONG not in text
    assert sum(REDACTED in r.getMessage() for r in request_lines()) >= 7
    assert any(
        r.levelno == logging.WARNING and "authentication failed" in r.getMessage() for r in caplog.records
    )


def test_a_user_name_cannot_forge_lines_in_the_log(
    server: ClickHouseHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by attack: the failed login's name was logged raw, so `user=nobody%0A<a line>` wrote a
    # second, real-looking line (here: a forged 'serving ... writable=True').
    caplog.set_level(logging.DEBUG)
    forged = "2026-12-06 23:59:59,000 INFO sinks.clickhouse.serve.server: serving FORGED-LINE"
    target = "GET /?query=SELECT%201&user=nobody%0A" + forged.replace(" ", "%20") + "&password=x"
    assert _send(server, target, {}) == 403
    failed = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert failed
    assert all("\n" not in line for line in failed)
    assert "FORGED-LINE" in failed[-1]  # still said, as one line


# 3. settings outside the URL

PROBE = (
    "SELECT getSetting('readonly'), getSetting('max_execution_time'), getSetting('max_memory_usage'), "
    "currentDatabase()"
)
READER_VIEW = f"1\t{MAX_EXECUTION_S}\t{1 << 30}\ttykpulse_readers\n".encode()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-ClickHouse-Setting-readonly": "0", "X-ClickHouse-Setting-max_execution_time": "0"},
        {"X-ClickHouse-Setting-max_memory_usage": "0", "X-ClickHouse-Readonly": "0"},
        {"readonly": "0", "max_execution_time": "0", "max_memory_usage": "0"},
        {"X-ClickHouse-Database": "system"},
        {"X-ClickHouse-Format": "JSON"},
        {"X-ClickHouse-Quota": "unlimited", "X-ClickHouse-Role": "admin", "X-ClickHouse-Profile": "default"},
    ],
    ids=["setting-headers", "readonly-header", "bare-headers", "database", "format", "quota-role"],
)
def test_settings_in_headers_are_ignored(server: ClickHouseHttpServer, headers: dict[str, str]) -> None:
    """No header sets anything: the reader keeps readonly=1, its limits, `default` and TabSeparated."""
    status, response_headers, body = post(server, PROBE, headers=headers)
    assert (status, body) == (200, READER_VIEW)
    assert response_headers["x-clickhouse-format"] == "TabSeparated"
    assert_usable(server)


def test_a_database_header_reaches_no_system_table(server: ClickHouseHttpServer) -> None:
    status, headers, _ = post(
        server, "SELECT count() FROM processes", headers={"X-ClickHouse-Database": "system"}
    )
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "60")  # looked up in `default`
    status, headers, _ = post(
        server, "SELECT count() FROM system.processes", headers={"X-ClickHouse-Database": "system"}
    )
    assert (status, headers["x-clickhouse-exception-code"]) == (403, "497")  # the gate, as always


FORM = "application/x-www-form-urlencoded"


def test_form_fields_are_never_read_as_parameters(server: ClickHouseHttpServer) -> None:
    """The body is SQL whatever its Content-Type (curl -d sends SQL as a form): form fields are
    refused as a syntax error, never taken as settings."""
    fields = {"query": PROBE, "readonly": "0", "max_execution_time": "0", "max_memory_usage": "0"}
    status, headers, body = post(server, urllib.parse.urlencode(fields), headers={"Content-Type": FORM})
    assert (status, headers["x-clickhouse-exception-code"]) == (400, "62"), body
    path = "/?" + urllib.parse.urlencode({"query": PROBE})
    status, headers, body = post(
        server, "readonly=0&max_execution_time=0", path, headers={"Content-Type": FORM}
    )
    assert (status, headers["x-clickhouse-exception-code"]) == (400, "62"), body
    status, _, body = post(server, PROBE, headers={"Content-Type": FORM})  # plain SQL under a form's type
    assert (status, body) == (200, READER_VIEW)
    assert_usable(server)


def _multipart(boundary: str, fields: dict[str, str]) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=b", "Multipart/Form-Data; boundary=b"]
)
@pytest.mark.parametrize(
    "fields",
    [
        {"query": PROBE, "readonly": "0", "max_execution_time": "0"},
        {"query": "SELECT * FROM ext", "ext_structure": "x UInt8", "ext": "1"},  # external data
    ],
    ids=["settings", "external-data"],
)
def test_multipart_requests_are_refused(
    server: ClickHouseHttpServer, content_type: str, fields: dict[str, str]
) -> None:
    status, headers, body = post(server, _multipart("b", fields), headers={"Content-Type": content_type})
    assert (status, headers["x-clickhouse-exception-code"]) == (501, "48"), body
    assert b"multipart/form-data" in body
    assert_usable(server)


RESULT_MIB = 10  # each unread reader's result
BUDGET_MIB = 25  # room for two of them


def test_readers_hold_a_bounded_total_of_bodies_and_results(tmp_path: Path) -> None:
    """Results written to clients that do not read, and gzip bodies, count against one budget.

    Before it, bodies were read and inflated before any slot was taken and results were held while
    written to a client that never reads: the audit took the process from 0.4 to 4.6 GB RSS. Now the
    server's own count of what readers hold never passes the budget, a result that does not fit is
    refused with 503, and the writer is not held up by any of it.
    """
    settings = ServeSettings(
        serve_listen="127.0.0.1:0",
        writer_password=SecretStr(RIGHT),
        serve_reader_max_inflight_mb=BUDGET_MIB,
        serve_max_decompressed_mb=8,
    )
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        sql = f"SELECT repeat('x', 1000000) FROM numbers({RESULT_MIB})".encode()
        head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(sql)}\r\n\r\n".encode()
        unread: list[socket.socket] = []
        for _ in range(6):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(srv.address)
            sock.sendall(head + sql)
            unread.append(sock)

        def settled() -> bool:
            readings = srv.stats.readings()
            queries, errors = readings["queries"], readings["errors"]
            assert isinstance(queries, dict)
            assert isinstance(errors, dict)
            return queries.get("reader/ok", 0) + errors.get("503", 0) == len(unread)

        wait_until(settled, "every unread reader answered or refused", 20)
        errors = srv.stats.readings()["errors"]
        assert isinstance(errors, dict)
        assert errors.get("503", 0) >= len(unread) - 2, errors  # before: all 6 results held, no 503
        held = srv.reader_budget_readings()
        assert held["refused"] >= len(unread) - 2
        # results held while written, counted: one or two, as answers are counted while the engine
        # writes them, so those read at the same time compete for the budget
        assert held["in_flight_bytes"] >= RESULT_MIB * 1_000_000
        assert held["peak_bytes"] <= BUDGET_MIB << 20
        # the writer is not counted and not held up
        as_writer(srv, "CREATE TABLE default.t (x UInt64) ENGINE = MergeTree ORDER BY x")
        as_writer(srv, "INSERT INTO default.t VALUES (1), (2)")
        assert as_writer(srv, "SELECT count() FROM default.t") == b"2\n"
        for sock in unread:
            sock.close()
        wait_until(lambda: srv.reader_budget_readings()["in_flight_bytes"] == 0, "the results released", 40)

        # gzip bodies of 7 MiB inflated each: reserved before they are read, so never all at once
        inflated = b"SELECT 1 /* " + b"x" * (7 << 20) + b" */"
        packed = gzip.compress(inflated)
        head = (
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(packed)}\r\n\r\n"
        ).encode()
        bombs = [socket.create_connection(srv.address, timeout=60) for _ in range(8)]
        for sock in bombs:
            sock.sendall(head + packed)
        for sock in bombs:
            # answered (a statement this long is the engine's syntax error), not refused: they waited
            assert not sock.recv(64).startswith(b"HTTP/1.1 503"), "a gzip reader refused"
            sock.close()
        readings = srv.reader_budget_readings()
        assert 8 << 20 < readings["peak_bytes"] <= BUDGET_MIB << 20, readings


def test_an_answer_is_held_against_the_readers_budget_while_it_is_read(tmp_path: Path) -> None:
    """A reader's answer counts against the budget as it comes from the engine, not once whole.

    Before, each answer was read whole (up to max_result_bytes, 256 MiB) and copied before the budget
    was asked: four readers' 240 MB answers took a real db serve to 2.6 GB RSS against a 512 MiB
    budget. Here one reader holds 10 MB unread against a 16 MiB budget, and another asks for 60 MB:
    refused with 503 as before, but having held no more than the budget's room (old code: 120 MB,
    the answer and its copy).
    """
    settings = ServeSettings(
        serve_listen="127.0.0.1:0", writer_password=SecretStr(RIGHT), serve_reader_max_inflight_mb=16
    )
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        holder = hold_unread_answer(srv, megabytes=10)
        wait_until(
            lambda: srv.reader_budget_readings()["in_flight_bytes"] >= 10_000_000, "the result held", 30
        )
        tracemalloc.start()
        try:
            status, _, body = post(srv, "SELECT repeat('x', 1000000) FROM numbers(60)")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        holder.close()
        assert status == 503, body
        assert b"TOO_MANY_SIMULTANEOUS_QUERIES" in body
        assert peak < 16 << 20, f"{peak / 1e6:.0f} MB held for an answer the budget had no room for"
        assert srv.reader_budget_readings()["peak_bytes"] <= 16 << 20
        # an answer that fits is the engine's, whole
        wait_until(lambda: srv.reader_budget_readings()["in_flight_bytes"] == 0, "the result released", 30)
        status, _, body = post(srv, "SELECT repeat('x', 1000000) FROM numbers(12)")
        assert status == 200
        assert body == (b"x" * 1_000_000 + b"\n") * 12


def test_an_answer_the_budget_refuses_gives_its_share_back_in_the_same_step() -> None:
    """Two answers growing side by side: the one refused frees its room for the other at once."""
    budget = ByteBudget(10)
    first, second = budget.reserve(4, 1), budget.reserve(4, 1)
    assert first is not None
    assert second is not None
    assert not first.resize(8, refused=1)
    assert first.size == 1
    assert second.resize(9)  # before: the refused answer's 4 bytes stayed until its request ended
    assert budget.readings()["in_flight_bytes"] == 10


def test_a_reader_trickling_a_large_body_cannot_lock_the_other_readers_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader's body is its statement: it may not reserve the readers' whole budget for itself.

    Before, one anonymous connection announcing a 256 MiB gzip body (256 MiB sent + 256 MiB decoded,
    the whole 512 MiB budget) and sending a byte every 20 s had every other reader refused with 503,
    POST and GET alike, for as long as it went on (against a real db serve, minutes).
    """
    monkeypatch.setattr(server_module, "QUEUE_TIMEOUT_S", 2.0)  # the old code's refusal, sooner
    settings = ServeSettings(serve_listen="127.0.0.1:0", writer_password=SecretStr(RIGHT))
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        trickling = []
        for length in (256 << 20, 400_000):  # the largest body allowed, and one a statement could be
            sock = socket.create_connection(srv.address, timeout=30)
            head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\nContent-Length: {length}"
            sock.sendall(head.encode() + b"\r\n\r\n\x1f")
            trickling.append(sock)
        try:
            time.sleep(0.5)  # both heads taken, their reservations made
            for _ in range(3):
                status, _, body = post(srv, "SELECT 42")
                assert (status, body) == (200, b"42\n")
            assert srv.reader_budget_readings()["in_flight_bytes"] <= 2 * server_module.READER_MAX_BODY_BYTES
            as_writer(srv, "SELECT 1")
        finally:
            for sock in trickling:
                sock.close()


def test_the_connection_cap_keeps_the_writer_and_closes_idle_and_trickling_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most serve_max_connections open; the writer's kept-alive connection is never the one closed.

    Before the cap every connection kept its thread for ever, and a request head sent one byte at a
    time stayed open as long as each byte came within 30 s.
    """
    monkeypatch.setattr(connections, "HEAD_TIMEOUT_S", 1.0)
    cap = 8
    settings = ServeSettings(
        serve_listen="127.0.0.1:0", writer_password=SecretStr(RIGHT), serve_max_connections=cap
    )
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        writer = http.client.HTTPConnection(*srv.address, timeout=30)
        headers = {"X-ClickHouse-User": "tykpulse", "X-ClickHouse-Key": RIGHT}
        writer.request("POST", "/", b"SELECT 1", headers)
        assert writer.getresponse().read() == b"1\n"
        kept = writer.sock
        threads_before = threading.active_count()
        idle = [socket.create_connection(srv.address, timeout=30) for _ in range(3 * cap)]
        time.sleep(0.5)  # for the accept loop to take them all
        assert threading.active_count() <= threads_before + cap, (threads_before, threading.active_count())
        readings = srv.connection_readings()
        assert readings["peak"] <= cap, readings
        assert readings["evicted"] >= 2 * cap, readings
        # the writer's connection, the oldest idle one, was kept: the same socket answers again
        writer.request("POST", "/", b"SELECT 2", headers)
        assert writer.getresponse().read() == b"2\n"
        assert writer.sock is kept
        writer.close()
        for sock in idle:
            sock.close()
        # a request head trickled a byte at a time is closed at its deadline, though each byte is prompt
        trickle = socket.create_connection(srv.address, timeout=30)
        started = time.monotonic()
        closed = False
        for byte in b"GET /?query=SELECT%201 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 100:
            try:
                trickle.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if _closed_by_peer(trickle):
                closed = True
                break
        elapsed = time.monotonic() - started
        trickle.close()
        assert closed, "a request head trickled for 15 s was never closed"
        assert elapsed < 5
        assert srv.connection_readings()["head_timed_out"] >= 1


def _closed_by_peer(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_reader_closed_to_make_room_stops_waiting_for_the_budget() -> None:
    """A waiting reservation ends as soon as its connection is dropped, not after 30 s of a held thread."""
    budget = ByteBudget(10)
    held = budget.reserve(10, 1)
    assert held is not None
    dropped = threading.Event()
    threading.Timer(0.2, dropped.set).start()
    started = time.monotonic()
    assert budget.reserve(5, 30, abandoned=dropped.is_set) is None
    assert time.monotonic() - started < 2
    held.release()
    assert budget.reserve(5, 1) is not None
