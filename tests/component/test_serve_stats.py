"""What `db serve` counts for its /metrics: every answer by role and outcome, refusals by status."""

from __future__ import annotations

import http.client
import logging
import socket
import struct
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr

from sinks.clickhouse.serve import ClickHouseHttpServer, ServeSettings
from tests.component.test_serve_hostile_clients import hold_unread_answer
from tests.harness.tykpulse import wait_until

pytestmark = pytest.mark.component

WRITER = {"X-ClickHouse-User": "tykpulse", "X-ClickHouse-Key": "s3cret"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ClickHouseHttpServer]:
    password = SecretStr(WRITER["X-ClickHouse-Key"])
    settings = ServeSettings(serve_listen="127.0.0.1:0", writer_password=password)
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        yield srv


def request(server: ClickHouseHttpServer, sql: str, *, path: str = "/", **headers: str) -> int:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", path + "?" + urllib.parse.urlencode({"query": sql}), headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def moved(before: Mapping[str, object], after: Mapping[str, object]) -> dict[str, float]:
    """Every reading that changed, flattened as 'name' or 'name:label', by how much."""

    def flat(readings: Mapping[str, object]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, value in readings.items():
            if isinstance(value, dict):
                out.update({f"{name}:{key}": float(count) for key, count in value.items()})
            else:
                assert isinstance(value, float)
                out[name] = value
        return out

    old, new = flat(before), flat(after)
    return {key: new[key] - old.get(key, 0.0) for key in new if new[key] != old.get(key, 0.0)}


def test_every_answer_is_counted_by_role_outcome_and_status(server: ClickHouseHttpServer) -> None:
    assert request(server, "CREATE TABLE default.t (x UInt64) ENGINE = MergeTree ORDER BY x", **WRITER) == 200
    before = server.stats.readings()

    assert request(server, "SELECT 1") == 200
    assert request(server, "SELECT * FROM file('/etc/hostname', 'RawBLOB')") == 403  # the gate
    assert request(server, "SELEC 1") == 400  # the engine's syntax error
    assert request(server, "INSERT INTO default.t VALUES (1), (2), (3)", **WRITER) == 200
    assert request(server, "INSERT INTO default.t VALUES (4)") == 403  # a reader may not write
    assert request(server, "SELECT 1", **{**WRITER, "X-ClickHouse-Key": "wrong"}) == 403
    assert request(server, "SELECT 1", path="/nowhere") == 404

    assert moved(before, server.stats.readings()) == {
        "queries:reader/ok": 1,
        "queries:reader/error": 3,  # file(), the syntax error, the reader's insert
        "queries:writer/ok": 1,
        "errors:403": 3,  # file(), the reader's insert, the wrong password (before any role)
        "errors:400": 1,
        "errors:404": 1,
        "rows_written": 3,
    }


def scalar(readings: Mapping[str, float | dict[str, float]], name: str) -> float:
    # every reading is one number but the labelled ones (queries, errors, connections_closed)
    return cast(float, readings[name])


def evicted(server: ClickHouseHttpServer) -> float:
    closed = server.readings()["connections_closed"]
    assert isinstance(closed, dict)
    return closed["evicted"]


def test_the_connection_cap_and_the_readers_budget_are_counted_for_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = SecretStr(WRITER["X-ClickHouse-Key"])
    settings = ServeSettings(
        serve_listen="127.0.0.1:0",
        writer_password=password,
        serve_max_connections=2,
        serve_reader_max_inflight_mb=16,
    )
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        before = srv.readings()
        assert before["reader_in_flight_limit_bytes"] == 16 << 20
        assert before["connections_closed"] == {"evicted": 0.0, "refused": 0.0, "head_timed_out": 0.0}

        # a client that does not read its 10 MB result holds it (the socket buffers take ~4 MiB) ...
        holder = hold_unread_answer(srv, megabytes=10)
        wait_until(
            lambda: scalar(srv.readings(), "reader_in_flight_bytes") >= 10_000_000,
            "the result held",
            timeout=30,
        )
        # ... so another reader's 7 MB result does not fit the 16 MiB budget: refused at once
        assert request(srv, "SELECT repeat('x', 1000000) FROM numbers(7)") == 503
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        holder.close()  # with a reset: the answer being sent is abandoned
        wait_until(lambda: srv.readings()["reader_in_flight_bytes"] == 0, "the result released", timeout=30)
        # three idle clients against a cap of two: the one waiting longest is closed to make room
        idle = [socket.create_connection(srv.address, timeout=10) for _ in range(3)]
        try:
            wait_until(lambda: evicted(srv) >= 1, "an idle client evicted", timeout=30)
            after = srv.readings()
        finally:
            for sock in idle:
                sock.close()

    changed = moved(before, after)
    assert changed["reader_budget_refused"] == 1
    assert changed["errors:503"] == 1
    assert changed["connections_closed:evicted"] == 1
    assert after["connections_peak"] == 2
    assert after["connections_open"] == 2
    assert scalar(after, "reader_in_flight_peak_bytes") >= 10_000_000
    assert "connections_closed:refused" not in changed
    # a client gone mid-answer is counted and logged in one line, not as a server error
    assert changed["abandoned"] == 1
    assert "errors:500" not in changed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
