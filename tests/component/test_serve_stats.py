"""What `db serve` counts for its /metrics: every answer by role and outcome, refusals by status."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from sinks.clickhouse.serve import ClickHouseHttpServer, ServeSettings

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


def moved(before: dict[str, object], after: dict[str, object]) -> dict[str, float]:
    """Every reading that changed, flattened as 'name' or 'name:label', by how much."""

    def flat(readings: dict[str, object]) -> dict[str, float]:
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
