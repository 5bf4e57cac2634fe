"""translate(): only an error that proves the rows bad is a refusal; everything else is retried.

The driver exceptions are built the way clickhouse-connect builds them: the
HTTP backend's build_http_error (code from the X-ClickHouse-Exception-Code
header, OperationalError once the driver retried) and the chDB backend's
DatabaseError(message, code=, name=).
"""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Callable
from email.message import Message

import pytest
from clickhouse_connect.driver._backend.httpcommon import build_http_error
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    OperationalError,
    ProgrammingError,
    StreamFailureError,
)

from sinks.clickhouse.sink import CONFIGURATION_ERROR_CODES, DATA_ERROR_CODES, translate
from sinks.errors import SinkRejectedError, SinkUnavailableError

# code -> name, as ClickHouse's src/Common/ErrorCodes.cpp spells them.
ROWS_ARE_BAD = {
    6: "CANNOT_PARSE_TEXT",
    8: "THERE_IS_NO_COLUMN",
    10: "NOT_FOUND_COLUMN_IN_BLOCK",
    16: "NO_SUCH_COLUMN_IN_TABLE",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    43: "ILLEGAL_TYPE_OF_ARGUMENT",
    44: "ILLEGAL_COLUMN",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
}
TRANSIENT = {
    394: "QUERY_WAS_CANCELLED",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    241: "MEMORY_LIMIT_EXCEEDED",
    159: "TIMEOUT_EXCEEDED",
    252: "TOO_MANY_PARTS",
    373: "SESSION_IS_LOCKED",
    33: "CANNOT_READ_ALL_DATA",  # a body cut short in transit looks the same
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    319: "UNKNOWN_STATUS_OF_INSERT",
}
CONFIGURATION = {516: "AUTHENTICATION_FAILED", 497: "ACCESS_DENIED", 164: "READONLY"}
SCHEMA_MISSING = {60: "UNKNOWN_TABLE", 81: "UNKNOWN_DATABASE"}
UNKNOWN = {49: "LOGICAL_ERROR", 62: "SYNTAX_ERROR", 1002: "UNKNOWN_EXCEPTION", 9999: "NOT_A_CODE"}


def over_http(code: int, name: str, *, retried: bool = False) -> DatabaseError:
    body = f"Code: {code}. DB::Exception: something happened. ({name}) (version 26.9.2.1)"
    return build_http_error(500, str(code), body, True, "http://ch:8123/", retried)


def from_chdb(code: int, name: str) -> DatabaseError:
    return DatabaseError(f"Code: {code}. DB::Exception: something happened. ({name})", code=code, name=name)


MakeError = Callable[[int, str], DatabaseError]
DRIVERS: list[MakeError] = [over_http, from_chdb]


@pytest.mark.parametrize("make", DRIVERS)
@pytest.mark.parametrize(("code", "name"), sorted(ROWS_ARE_BAD.items()))
def test_an_error_about_the_rows_is_a_refusal(make: MakeError, code: int, name: str) -> None:
    error = translate(make(code, name), "insert into db.traffic_in", "db.traffic_in")
    assert isinstance(error, SinkRejectedError)
    assert (error.code, error.table) == (code, "db.traffic_in")


@pytest.mark.parametrize("make", DRIVERS)
@pytest.mark.parametrize(
    ("code", "name"), sorted({**TRANSIENT, **CONFIGURATION, **SCHEMA_MISSING, **UNKNOWN}.items())
)
def test_anything_else_with_a_code_is_retried_and_keeps_the_code(
    make: MakeError, code: int, name: str
) -> None:
    error = translate(make(code, name), "insert into db.traffic_in", "db.traffic_in")
    assert isinstance(error, SinkUnavailableError)
    assert error.code == code
    assert name in str(error)


def test_a_data_code_is_a_refusal_even_after_the_driver_retried_the_request() -> None:
    """The driver turns a retried request's error into OperationalError; the code is still the evidence."""
    raised = over_http(53, "TYPE_MISMATCH", retried=True)
    assert isinstance(raised, OperationalError)
    assert isinstance(translate(raised, "insert"), SinkRejectedError)


@pytest.mark.parametrize(
    "raised",
    [
        OperationalError("Network Error: connection reset"),
        StreamFailureError("stream ended early"),
        ProgrammingError("The client has been closed"),
        DatabaseError("The ClickHouse server returned an error"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
        # An OSError whose `code` is an HTTP status: 407 is not DECIMAL_OVERFLOW.
        urllib.error.HTTPError("http://proxy/", 407, "Proxy Authentication Required", Message(), None),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_an_error_without_a_clickhouse_code_is_retried(raised: Exception) -> None:
    error = translate(raised, "insert")
    assert isinstance(error, SinkUnavailableError)
    assert error.code is None


@pytest.mark.parametrize(("code", "name"), sorted(CONFIGURATION.items()))
def test_a_user_clickhouse_refuses_is_logged_as_an_error(
    code: int, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="sinks.clickhouse.sink"):
        translate(over_http(code, name), "insert")
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "nothing is dropped" in caplog.records[0].getMessage()


def test_no_code_is_both_a_refusal_and_retried() -> None:
    retried = set(TRANSIENT) | set(CONFIGURATION) | set(SCHEMA_MISSING) | set(UNKNOWN)
    assert not DATA_ERROR_CODES & (retried | CONFIGURATION_ERROR_CODES)
    assert set(ROWS_ARE_BAD) <= DATA_ERROR_CODES
