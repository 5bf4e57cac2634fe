"""Pure parts of the ClickHouse HTTP endpoint: request parsing, statement kinds, errors, access."""

from __future__ import annotations

import base64
import gzip

import pytest
from pydantic import SecretStr

from sinks.clickhouse.serve.access import Access
from sinks.clickhouse.serve.errors import ServeError
from sinks.clickhouse.serve.handles import Role
from sinks.clickhouse.serve.request import credentials, parse_query
from sinks.clickhouse.serve.settings import ServeSettings
from sinks.clickhouse.serve.statements import (
    changes_handle_state,
    first_keyword,
    output_format,
    without_format,
)

pytestmark = pytest.mark.unit


def test_query_parameter_and_body_are_joined_with_a_newline() -> None:
    q = parse_query("POST", {"query": "INSERT INTO t FORMAT Native"}, {}, b"\x09\x01binary")
    assert q is not None
    assert q.sql == b"INSERT INTO t FORMAT Native\n\x09\x01binary"


def test_settings_params_and_transport_parameters_are_told_apart() -> None:
    params = {
        "query": "SELECT {a:UInt8}",
        "database": "tykpulse",
        "session_id": "s",
        "query_id": "q1",
        "param_a": "1",
        "max_threads": "2",
        "wait_end_of_query": "1",
        "enable_http_compression": "1",
        "default_format": "Native",
    }
    q = parse_query("POST", params, {"accept-encoding": "lz4,zstd"}, b"")
    assert q is not None
    assert q.settings == {"max_threads": "2"}
    assert q.params == {"a": "1"}
    assert (q.database, q.session_id, q.query_id, q.default_format) == ("tykpulse", "s", "q1", "Native")
    assert q.response_encoding == "lz4"
    assert not q.readonly


def test_get_and_readonly_parameter_are_read_only_and_empty_requests_are_health_checks() -> None:
    assert parse_query("GET", {"query": "SELECT 1"}, {}, b"").readonly  # type: ignore[union-attr]
    assert parse_query("POST", {"readonly": "1"}, {}, b"SELECT 1").readonly  # type: ignore[union-attr]
    assert parse_query("GET", {}, {}, b"") is None


def test_compressed_bodies_are_decoded_and_bad_ones_refused() -> None:
    q = parse_query("POST", {}, {"content-encoding": "gzip"}, gzip.compress(b"SELECT 1"))
    assert q is not None
    assert q.sql == b"SELECT 1"
    with pytest.raises(ServeError) as info:
        parse_query("POST", {"decompress": "1"}, {}, b"x")
    assert info.value.code == 271
    with pytest.raises(ServeError) as info:
        parse_query("POST", {}, {"content-encoding": "gzip"}, b"not gzip")
    assert info.value.code == 271


def test_credentials_from_headers_basic_auth_and_parameters() -> None:
    assert credentials({"x-clickhouse-user": "u", "x-clickhouse-key": "k"}, {}).password == "k"
    basic = "Basic " + base64.b64encode(b"w:p:q").decode()
    assert credentials({"authorization": basic}, {}) == credentials({}, {"user": "w", "password": "p:q"})
    assert credentials({}, {}).user == "default"


def test_statement_kinds() -> None:
    assert first_keyword(b"  -- c\n/* x */ (select 1)") == "SELECT"
    assert output_format(b"SELECT 1 FORMAT JSONEachRow", "TabSeparated") == "JSONEachRow"
    assert output_format(b"WITH 1 AS x SELECT x", "Native") == "Native"
    assert output_format(b"INSERT INTO t FORMAT Native\n...", "Native") is None
    # the engine's canonical text quotes a format named like a keyword
    assert output_format(b"SELECT 1\nFORMAT `Values`", "TabSeparated") == "Values"
    assert without_format(b"SELECT 1\nFORMAT `Values`") == b"SELECT 1"
    assert without_format(b"SELECT 1 FORMAT TSV ;") == without_format(b"SELECT 1;") == b"SELECT 1"
    assert changes_handle_state(b"SET max_threads = 1")
    assert changes_handle_state(b"create temporary table t (x UInt8)")
    assert not changes_handle_state(b"SELECT 1")


def test_engine_errors_keep_code_and_name() -> None:
    exc = ServeError.from_engine(
        RuntimeError("Code: 81. DB::Exception: Database nope does not exist. (UNKNOWN_DATABASE)")
    )
    assert (exc.code, exc.name, exc.status) == (81, "UNKNOWN_DATABASE", 404)
    assert (
        exc.body("1.0")
        == b"Code: 81. DB::Exception: Database nope does not exist. (UNKNOWN_DATABASE) (version 1.0)\n"
    )
    assert ServeError.from_engine(RuntimeError("boom")).code == 1002


def test_access_roles() -> None:
    access = Access(ServeSettings(writer_password=SecretStr("pw")))
    writer = credentials({}, {"user": "tykpulse", "password": "pw"})
    assert access.role(writer, readonly_request=False) is Role.WRITER
    assert access.role(writer, readonly_request=True) is Role.READER
    assert access.role(credentials({}, {}), readonly_request=False) is Role.READER
    with pytest.raises(ServeError):
        access.role(credentials({}, {"user": "tykpulse", "password": "no"}), readonly_request=False)
    with pytest.raises(ServeError):
        Access(ServeSettings()).role(writer, readonly_request=False)  # no writer without a password


def test_listen_address_is_loopback_unless_allowed() -> None:
    assert ServeSettings(serve_listen="127.0.0.1:8123").address() == ("127.0.0.1", 8123)
    assert ServeSettings(serve_listen="[::1]:9000").address() == ("::1", 9000)
    assert not ServeSettings(serve_listen="off").enabled
    with pytest.raises(ValueError, match="loopback"):
        ServeSettings(serve_listen="0.0.0.0:8123").address()
    assert ServeSettings(serve_listen="0.0.0.0:8123", serve_allow_remote=True).address()[1] == 8123


def test_insert_data_is_split_from_its_statement() -> None:
    from sinks.clickhouse.serve.statements import split_insert_data

    assert split_insert_data(b"INSERT INTO d.t (a, b) FORMAT Native\n\x09\n\x00data") == (
        b"INSERT INTO d.t (a, b) FROM INFILE {path} FORMAT Native",
        b"\x09\n\x00data",
    )
    assert split_insert_data(b"insert into t SETTINGS x = 1 format Arrow  \r\nABC") == (
        b"insert into t FROM INFILE {path} SETTINGS x = 1 FORMAT Arrow",
        b"ABC",
    )
    assert split_insert_data(b"INSERT INTO t FORMAT CSV 1,2") == (
        b"INSERT INTO t FROM INFILE {path} FORMAT CSV",
        b"1,2",
    )
    assert split_insert_data(b"INSERT INTO t VALUES (1)") is None
    assert split_insert_data(b"INSERT INTO t FORMAT Native\n") is None
    assert split_insert_data(b"SELECT 1 FORMAT Native") is None


def test_compressed_blocks_round_trip_and_reject_corruption() -> None:
    from sinks.clickhouse.serve.blocks import MAX_BLOCK, compress_blocks, decompress_blocks

    data = bytes(range(256)) * (MAX_BLOCK // 100)  # more than two blocks
    for method in ("lz4", "zstd", "none"):
        assert decompress_blocks(compress_blocks(data, method)) == data
    with pytest.raises(ServeError) as info:
        decompress_blocks(compress_blocks(data)[:-5])
    assert info.value.code == 271
    assert decompress_blocks(b"") == b""


def test_nested_engine_errors_are_reported_once() -> None:
    nested = RuntimeError(
        "Code: 41. DB::Exception: Code: 41. DB::Exception: Cannot read DateTime: x. "
        "(CANNOT_PARSE_DATETIME) (version 26.9.2.1). (CANNOT_PARSE_DATETIME)"
    )
    exc = ServeError.from_engine(nested)
    assert (exc.code, exc.name, exc.message) == (41, "CANNOT_PARSE_DATETIME", "Cannot read DateTime: x")
