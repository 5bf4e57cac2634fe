"""The ClickHouse HTTP endpoint over embedded chDB, driven by clickhouse-connect's own http client."""

from __future__ import annotations

import base64
import datetime
import http.client
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import clickhouse_connect
import pandas as pd
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from sinks.clickhouse.durable import FilesystemSync
from sinks.clickhouse.serve import ClickHouseHttpServer, ServeSettings

pytestmark = pytest.mark.component

WRITER = ("tykpulse", "s3cret")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ClickHouseHttpServer]:
    settings = ServeSettings(serve_listen="127.0.0.1:0", writer_password=SecretStr(WRITER[1]))
    with ClickHouseHttpServer(tmp_path / "db", settings) as srv:
        yield srv


class Auth(TypedDict, total=False):
    username: str
    password: str


def client(server: ClickHouseHttpServer, *, writer: bool = False, **kwargs: Any) -> Any:
    host, port = server.address
    auth: Auth = {"username": WRITER[0], "password": WRITER[1]} if writer else {}
    return clickhouse_connect.get_client(host=host, port=port, **auth, **kwargs)


@pytest.fixture
def writer(server: ClickHouseHttpServer) -> Iterator[Any]:
    c = client(server, writer=True)
    c.command("CREATE DATABASE IF NOT EXISTS d")
    c.command(
        "CREATE TABLE d.t (x UInt64, s LowCardinality(String), ts DateTime('UTC')) "
        "ENGINE = MergeTree ORDER BY x"
    )
    yield c
    c.close()


@pytest.fixture
def reader(server: ClickHouseHttpServer, writer: Any) -> Iterator[Any]:
    c = client(server, database="d")
    yield c
    c.close()


def raw(
    server: ClickHouseHttpServer, method: str, params: dict[str, str], body: bytes = b"", /, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, "/?" + urllib.parse.urlencode(params), body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_client_start_up_reports_the_engine(server: ClickHouseHttpServer) -> None:
    c = client(server)
    try:
        assert c.server_version == server.engine.version
        assert c.command("SELECT 1") == 1
        assert c.ping()
    finally:
        c.close()


# (clickhouse-connect itself cannot write deflate, so deflate is only checked for responses below)
@pytest.mark.parametrize("compress", [True, False, "gzip", "zstd", "lz4"])
def test_inserts_and_queries_round_trip_with_each_compression(
    server: ClickHouseHttpServer, writer: Any, compress: Any
) -> None:
    c = client(server, writer=True, compress=compress)
    try:
        c.insert("d.t", [[1, "a", 0], [2, "b", 60]], column_names=["x", "s", "ts"])
        c.insert_arrow(
            "d.t",
            pa.table(
                {
                    "x": pa.array([3], pa.uint64()),
                    "s": ["c"],
                    "ts": pa.array([120], pa.timestamp("s", tz="UTC")),
                }
            ),
        )
        c.insert_df("d.t", pd.DataFrame({"x": [4], "s": ["d"], "ts": [pd.Timestamp(180, unit="s")]}))
        rows = c.query("SELECT x, s, toUnixTimestamp(ts) FROM d.t ORDER BY x").result_rows
        assert rows == [(1, "a", 0), (2, "b", 60), (3, "c", 120), (4, "d", 180)]
        assert c.query_arrow("SELECT x FROM d.t ORDER BY x").column("x").to_pylist() == [1, 2, 3, 4]
        assert c.query_df("SELECT s FROM d.t ORDER BY x")["s"].tolist() == ["a", "b", "c", "d"]
    finally:
        c.close()


def test_query_parameters_and_settings_reach_the_engine(reader: Any) -> None:
    assert reader.query("SELECT {a:UInt8} + 1", parameters={"a": 41}).result_rows == [(42,)]
    assert reader.command("SELECT getSetting('max_threads')", settings={"max_threads": 3}) == 3
    # a setting is not left behind on the pooled handle for the next request
    assert reader.command("SELECT getSetting('max_threads')") != 3


def test_a_repeated_deduplication_token_lands_once(server: ClickHouseHttpServer, writer: Any) -> None:
    writer.command(
        "CREATE TABLE d.m (x UInt64) ENGINE = MergeTree ORDER BY x "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    table = pa.table({"x": pa.array([1, 2, 3], pa.uint64())})
    for _ in range(2):
        writer.insert_arrow("d.m", table, settings={"insert_deduplication_token": "flush-1"})
    writer.insert_arrow("d.m", table, settings={"insert_deduplication_token": "flush-2"})
    assert writer.command("SELECT count() FROM d.m") == 6


def test_bad_sql_raises_the_clickhouse_error(reader: Any) -> None:
    with pytest.raises(DatabaseError) as info:
        reader.query("SELEC 1")
    assert info.value.code == 62
    assert "SYNTAX_ERROR" in str(info.value)
    with pytest.raises(DatabaseError) as info:
        reader.query("SELECT * FROM d.nope")
    assert info.value.code == 60


def test_reader_cannot_write_or_reach_the_host(reader: Any) -> None:
    with pytest.raises(DatabaseError) as info:
        reader.command("INSERT INTO d.t VALUES (9, 'z', 0)")
    assert info.value.code == 164
    with pytest.raises(DatabaseError) as info:
        reader.insert("d.t", [[9, "z", 0]], column_names=["x", "s", "ts"])
    assert info.value.code == 164
    with pytest.raises(DatabaseError) as info:
        reader.query("SELECT * FROM file('/etc/hostname', 'LineAsString')")
    assert info.value.code == 497
    with pytest.raises(DatabaseError):
        reader.command("DROP TABLE d.t")
    assert reader.command("SELECT count() FROM d.t") == 0


def test_wrong_password_is_refused(server: ClickHouseHttpServer) -> None:
    host, port = server.address
    with pytest.raises(DatabaseError) as info:
        clickhouse_connect.get_client(host=host, port=port, username=WRITER[0], password="wrong")
    assert info.value.code == 516


def test_session_keeps_set_and_temporary_tables(server: ClickHouseHttpServer) -> None:
    c = client(server, writer=True, session_id="s-1")
    other = client(server, writer=True, autogenerate_session_id=False)
    try:
        c.command("SET max_threads = 1")
        c.command("CREATE TEMPORARY TABLE tmp (x UInt8)")
        c.command("INSERT INTO tmp VALUES (1), (2)")
        assert c.command("SELECT getSetting('max_threads')") == 1
        assert c.command("SELECT count() FROM tmp") == 2
        other.command("SET max_threads = 1")  # no session: lasts for that request only
        assert other.command("SELECT getSetting('max_threads')") != 1
    finally:
        c.close()
        other.close()


def test_a_reader_session_holds_no_state(server: ClickHouseHttpServer) -> None:
    """Readers change nothing on the server: SET and temporary tables are refused; settings go per request."""
    c = client(server, session_id="reader-1")
    try:
        for statement in ("SET max_threads = 1", "CREATE TEMPORARY TABLE tmp (x UInt8)"):
            with pytest.raises(DatabaseError) as info:
                c.command(statement)
            assert info.value.code == 164
        assert c.command("SELECT getSetting('max_threads')", settings={"max_threads": 1}) == 1
        assert c.command("SELECT 1") == 1
    finally:
        c.close()


def test_grafana_shaped_request_gets_the_engines_native_bytes(
    server: ClickHouseHttpServer, writer: Any
) -> None:
    """clickhouse-go over HTTP: SQL in the body, default_format=Native, credentials in headers."""
    writer.insert("d.t", [[1, "a", 0]], column_names=["x", "s", "ts"])
    sql = b"SELECT x, s, ts FROM d.t"
    status, headers, body = raw(
        server,
        "POST",
        {"default_format": "Native", "database": "d"},
        sql,
        **{"X-ClickHouse-User": "default", "X-ClickHouse-Key": ""},
    )
    assert status == 200, body
    assert headers["X-ClickHouse-Format"] == "Native"
    assert body.startswith(b"\x03\x01\x01x\x06UInt64")
    basic = base64.b64encode(f"{WRITER[0]}:{WRITER[1]}".encode()).decode()
    status, _, same = raw(
        server,
        "POST",
        {"default_format": "Native"},
        b"SELECT x, s, ts FROM d.t",
        Authorization=f"Basic {basic}",
    )
    assert (status, same) == (200, body)


def test_health_checks_and_get_queries(server: ClickHouseHttpServer) -> None:
    assert raw(server, "GET", {})[2] == b"Ok.\n"
    status, headers, body = raw(server, "GET", {"query": "SELECT 1 + 1"})
    assert (status, body) == (200, b"2\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    status, headers, _ = raw(server, "GET", {"query": "CREATE DATABASE x"})
    assert status == 403
    assert headers["X-ClickHouse-Exception-Code"] == "164"


@pytest.mark.parametrize("method", ["lz4", "zstd"])
def test_clickhouse_block_compression_both_ways(
    server: ClickHouseHttpServer, writer: Any, method: str
) -> None:
    """compress=1 / decompress=1, as clickhouse-go (LZ4/ZSTD over HTTP) and JDBC use them."""
    from sinks.clickhouse.serve.blocks import compress_blocks, decompress_blocks

    auth = {"X-ClickHouse-User": WRITER[0], "X-ClickHouse-Key": WRITER[1]}
    rows = b"".join(f"{i}\tname-{i}\t{1_600_000_000 + i}\n".encode() for i in range(50_000))
    params = {
        "query": "INSERT INTO d.t FORMAT TabSeparated",
        "decompress": "1",
        "date_time_input_format": "best_effort",
    }
    status, _, body = raw(server, "POST", params, compress_blocks(rows, method), **auth)
    assert status == 200, body
    query = {"compress": "1", "network_compression_method": method}
    status, _, body = raw(
        server, "POST", query, b"SELECT x, s, toUnixTimestamp(ts) FROM d.t ORDER BY x", **auth
    )
    assert status == 200
    assert body[16] == (0x82 if method == "lz4" else 0x90)
    assert decompress_blocks(body) == rows
    corrupt = bytearray(compress_blocks(b"1\ta\t0\n"))
    corrupt[0] ^= 0xFF
    status, headers, body = raw(server, "POST", params, bytes(corrupt), **auth)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "271")
    assert b"Checksum" in body


def test_block_format_matches_the_engines_own_column_files(server: ClickHouseHttpServer, writer: Any) -> None:
    """MergeTree column files are sequences of the same compressed blocks: read one the engine wrote."""
    import struct

    from sinks.clickhouse.serve.blocks import CHECKSUM, checksum, decompress_blocks

    writer.command(
        "CREATE TABLE d.n (v UInt64) ENGINE = MergeTree ORDER BY tuple() SETTINGS min_bytes_for_wide_part = 0"
    )
    writer.command("INSERT INTO d.n SELECT number * 7 FROM numbers(300000)")
    files = sorted(Path(server.engine.connection_string).glob("store/*/*/all_*/v.bin"))
    assert files
    data = files[0].read_bytes()
    size = struct.unpack_from("<I", data, CHECKSUM + 1)[0]
    assert checksum(data[CHECKSUM : CHECKSUM + size]) == data[:CHECKSUM]
    assert decompress_blocks(data) == b"".join(struct.pack("<Q", n * 7) for n in range(300000))


def test_many_arrow_and_native_inserts_land_whole(server: ClickHouseHttpServer, writer: Any) -> None:
    """Binary bodies go to the engine as files: inline binary data in a query is not read reliably."""
    import random

    rng = random.Random(7)
    expected = 0
    for i in range(40):
        n = rng.randrange(1, 4000)
        table = pa.table(
            {
                "x": pa.array([rng.randrange(10**12) for _ in range(n)], pa.uint64()),
                "s": [f"{rng.randrange(10**9):x}" for _ in range(n)],
                "ts": pa.array([rng.randrange(2**31) for _ in range(n)], pa.timestamp("s", tz="UTC")),
            }
        )
        writer.insert_arrow("d.t", table, settings={"insert_deduplication_token": f"arrow-{i}"})
        if i % 4 == 0:
            writer.insert("d.t", [list(r.values()) for r in table.to_pylist()], column_names=["x", "s", "ts"])
        expected += n * (2 if i % 4 == 0 else 1)
    assert writer.command("SELECT count() FROM d.t") == expected


def test_refuses_a_non_loopback_address_unless_allowed(tmp_path: Path) -> None:
    from sinks.errors import SinkRejectedError

    with pytest.raises(SinkRejectedError, match="loopback"):
        ClickHouseHttpServer(tmp_path / "db", ServeSettings(serve_listen="0.0.0.0:0")).start()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4"])
def test_responses_are_compressed_as_negotiated(server: ClickHouseHttpServer, encoding: str) -> None:
    from sinks.clickhouse.serve.codecs import decode_body

    params = {"query": "SELECT number FROM numbers(1000)", "enable_http_compression": "1"}
    status, headers, body = raw(server, "GET", params, **{"Accept-Encoding": f"br;q=1, {encoding}"})
    assert status == 200
    assert headers["Content-Encoding"] == encoding
    assert decode_body(body, encoding) == "".join(f"{i}\n" for i in range(1000)).encode()
    _, headers, plain = raw(server, "GET", {"query": "SELECT 1"}, **{"Accept-Encoding": encoding})
    assert "Content-Encoding" not in headers
    assert plain == b"1\n"


def test_an_insert_is_acknowledged_once_synced_and_a_failed_sync_refuses_every_insert_after(
    server: ClickHouseHttpServer, writer: Any
) -> None:
    # A worker drops what `db serve` acknowledged from its log: acknowledged means on the disk.
    syncs: list[int] = []
    failing = {"on": False}

    def syncfs(fd: int) -> None:
        syncs.append(fd)
        if failing["on"]:
            raise OSError(5, "Input/output error")

    server.engine._sync = FilesystemSync(server.engine.path, syncfs=syncfs)
    writer.insert("d.t", [[1, "a", datetime.datetime(2026, 1, 1)]], column_names=["x", "s", "ts"])
    assert len(syncs) == 1
    writer.command("SELECT 1")
    assert len(syncs) == 1, "only inserts are synced"
    failing["on"] = True
    with pytest.raises(DatabaseError, match="CANNOT_FSYNC"):
        writer.insert("d.t", [[2, "b", datetime.datetime(2026, 1, 1)]], column_names=["x", "s", "ts"])
    failing["on"] = False  # a retry, with the same token, would land nowhere and be acknowledged
    with pytest.raises(DatabaseError, match="CANNOT_FSYNC"):
        writer.insert("d.t", [[2, "b", datetime.datetime(2026, 1, 1)]], column_names=["x", "s", "ts"])
    assert len(syncs) == 2
    # the insert whose sync failed ran (its acknowledgement was refused); the one after never did
    assert writer.command("SELECT count() FROM d.t") == 2
