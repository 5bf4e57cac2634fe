"""A real `tykpulse db serve` process, logging at DEBUG, against clients that leak and leave.

Credentials sent every way the endpoint takes them (URL parameters, right and wrong; headers;
Basic auth) never appear in the process's log, at any level; a reader that hangs up on a query
that would run for minutes has it cancelled within seconds, and the writer still writes.
tests/component/test_serve_hostile_clients.py has the details on the in-process server.
"""

from __future__ import annotations

import base64
import http.client
import os
import random
import resource
import socket
import subprocess
import time
import uuid
from pathlib import Path

import clickhouse_connect
import pytest

from tests.harness.processes import free_port, stop_process
from tests.harness.tykpulse import tykpulse, wait_for_endpoint, wait_until

pytestmark = pytest.mark.integration

RIGHT = f"right-{uuid.uuid4().hex}"
WRONG = f"wrong-{uuid.uuid4().hex}"
WRITER_HEADERS = {"X-ClickHouse-User": "tykpulse", "X-ClickHouse-Key": RIGHT}
GONE_WITHIN_S = 5.0


def request(port: int, method: str, path: str, body: bytes = b"", /, **headers: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def as_writer(port: int, sql: str) -> bytes:
    status, body = request(port, "POST", "/", sql.encode(), **WRITER_HEADERS)
    assert status == 200, body
    return body


def running(port: int, mark: str) -> int:
    sql = (
        f"SELECT count() FROM system.processes WHERE query LIKE '%{mark}%' "
        "AND query NOT LIKE '%system.processes%'"
    )
    return int(as_writer(port, sql))


def send_credentials(port: int) -> None:
    """Every way to send a password, right and wrong; each answered as it should be."""
    select = "/?query=SELECT%201"
    basic = base64.b64encode(f"tykpulse:{RIGHT}".encode()).decode()
    assert request(port, "GET", f"{select}&password={WRONG}")[0] == 403
    assert request(port, "GET", f"{select}&user=tykpulse&password={WRONG}")[0] == 403
    assert request(port, "GET", f"{select}&user=tykpulse&password={RIGHT}")[0] == 200
    assert request(port, "POST", f"/?user=tykpulse&password={RIGHT}", b"SELECT 1")[0] == 200
    assert (
        request(port, "GET", select, **{"X-ClickHouse-User": "tykpulse", "X-ClickHouse-Key": WRONG})[0] == 403
    )
    assert request(port, "GET", select, **WRITER_HEADERS)[0] == 200
    assert request(port, "GET", select, Authorization=f"Basic {basic}")[0] == 200


def hang_up_on_a_long_query(port: int) -> float:
    """Seconds from the client's close to its query leaving system.processes."""
    mark = str(random.randrange(10**14, 10**15))
    body = f"SELECT count() FROM numbers(1000000000000) WHERE number != {mark}".encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    wait_until(lambda: running(port, mark) == 1, "the reader's query to run", 60)
    time.sleep(0.5)
    sock.close()
    left = time.monotonic()
    wait_until(lambda: running(port, mark) == 0, "the query to leave system.processes", GONE_WITHIN_S)
    return time.monotonic() - left


def test_db_serve_cancels_a_gone_reader_and_logs_no_credential(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "db-serve.log"
    env = {
        **os.environ,
        "TYKPULSE_WRITER_PASSWORD": RIGHT,
        "TYKPULSE_SERVE_READER_MAX_EXECUTION_S": "600",  # only the cancellation ends it in seconds
        "TYKPULSE_SERVE_READER_MAX_CONCURRENT": "1",  # a query left running would hold the only slot
    }
    command = tykpulse(
        "db", "serve", "--path", str(tmp_path / "db"), "--listen", f"127.0.0.1:{port}", "--no-schema",
        log_level="debug",
    )  # fmt: skip
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_endpoint(port, server)
        send_credentials(port)
        assert hang_up_on_a_long_query(port) < GONE_WITHIN_S
        started = time.monotonic()
        assert request(port, "GET", "/?query=SELECT%2042") == (200, b"42\n")  # the reader slot is free
        assert time.monotonic() - started < GONE_WITHIN_S
        as_writer(port, "CREATE TABLE default.t (x UInt64) ENGINE = MergeTree ORDER BY x")
        as_writer(port, "INSERT INTO default.t VALUES (1), (2), (3)")
        assert as_writer(port, "SELECT count() FROM default.t") == b"3\n"
    finally:
        assert stop_process(server, 30)
    log = log_path.read_text(errors="replace")
    assert "DEBUG" in log
    assert "password=<redacted>" in log
    assert "cancelling ticket=" in log
    assert RIGHT not in log
    assert WRONG not in log


def test_db_serve_refuses_an_empty_writer_password_at_start(tmp_path: Path) -> None:
    """`TYKPULSE_WRITER_PASSWORD=` (or `--writer-password ""`) made a writer with no password.

    Any local user then had write access and the engine's file() reads; now the command refuses
    to start, with a usage error naming the option, and never listens.
    """
    port = free_port()
    command = tykpulse(
        "db", "serve", "--path", str(tmp_path / "db"), "--listen", f"127.0.0.1:{port}", "--no-schema",
    )  # fmt: skip
    for env_value, extra in (("", ()), (None, ("--writer-password", ""))):
        env = {k: v for k, v in os.environ.items() if k != "TYKPULSE_WRITER_PASSWORD"}
        if env_value is not None:
            env["TYKPULSE_WRITER_PASSWORD"] = env_value
        server = subprocess.Popen(
            [*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        try:
            out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # the old code started serving: prove what that meant, then fail
            status, _ = request(port, "POST", "/", b"CREATE TABLE default.w (x UInt8) ENGINE = Memory",
                                **{"X-ClickHouse-User": "tykpulse", "X-ClickHouse-Key": ""})  # fmt: skip
            assert stop_process(server, 30)
            pytest.fail(f"db serve started with an empty writer password (password-less CREATE: {status})")
        text = out.decode(errors="replace")
        assert server.returncode == 2, text  # click's usage error
        assert "--writer-password" in text, text
        assert "empty" in text, text


FLOOD_NOFILE = 400  # the serving process's descriptor limit in the flood test
FLOOD_CAP = 64  # --serve-max-connections in the flood test
FLOOD = 500  # idle and slowloris connections held: more than the cap, and than the descriptor limit


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FLOOD_NOFILE, FLOOD_NOFILE))


def test_db_serve_keeps_the_writer_in_under_a_connection_flood(tmp_path: Path) -> None:
    """Idle and one-byte-at-a-time connections, more than the cap and the descriptor limit.

    Before the cap, each held a thread and a descriptor for ever: past the limit accept() failed with
    EMFILE, the accept loop spun a core, and the writer could not get in. Now the server keeps at most
    FLOOD_CAP of them, the writer's insert through clickhouse-connect lands, its thread count stays
    within the cap, and it does not spin.
    """
    port = free_port()
    env = {**os.environ, "TYKPULSE_WRITER_PASSWORD": RIGHT, "TYKPULSE_SERVE_MAX_CONNECTIONS": str(FLOOD_CAP)}
    command = tykpulse(
        "db", "serve", "--path", str(tmp_path / "db"), "--listen", f"127.0.0.1:{port}", "--no-schema"
    )
    server = subprocess.Popen(command, env=env, preexec_fn=_limit_descriptors)
    flood: list[socket.socket] = []
    try:
        wait_for_endpoint(port, server)
        as_writer(port, "CREATE TABLE default.t (x UInt64) ENGINE = MergeTree ORDER BY x")
        threads_before = _threads(server.pid)
        for i in range(FLOOD):
            sock = socket.socket()
            sock.settimeout(2)
            try:
                sock.connect(("127.0.0.1", port))
                if i % 2:
                    sock.send(b"GET /?query=SELECT")  # slowloris: a request line that never ends
            except OSError:
                sock.close()
                continue
            flood.append(sock)
        time.sleep(1)
        cpu_before = _cpu_s(server.pid)
        time.sleep(2)
        cpu_s = _cpu_s(server.pid) - cpu_before
        client = clickhouse_connect.get_client(
            host="127.0.0.1", port=port, username="tykpulse", password=RIGHT,
            connect_timeout=5, send_receive_timeout=20,
        )  # fmt: skip
        client.insert("default.t", [[1], [2], [3]], column_names=["x"])
        assert as_writer(port, "SELECT count() FROM default.t") == b"3\n"
        threads = _threads(server.pid)
        client.close()
        assert threads <= threads_before + FLOOD_CAP + 8, (threads_before, threads)
        assert cpu_s < 1.0, f"the server used {cpu_s:.2f} s of CPU in 2 s with idle connections"
    finally:
        for sock in flood:
            sock.close()
        assert stop_process(server, 30)
