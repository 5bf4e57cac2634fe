"""ClickHouse-style errors of the HTTP endpoint.

Every failure a client sees carries ClickHouse's numeric code in the
`X-ClickHouse-Exception-Code` header and a body shaped like the server's
(`Code: 62. DB::Exception: ... (SYNTAX_ERROR) (version ...)`), so
clickhouse-connect and clickhouse-go raise their usual exceptions with the
code set. Engine errors keep the code and name chDB reported.
"""

from __future__ import annotations

import re
from typing import Final

from sinks.errors import SinkError

_CODE_RE: Final = re.compile(r"Code:\s*(\d+)\.\s*(?:DB::Exception:\s*)?(.*)", re.DOTALL)
_VERSION_RE: Final = re.compile(r"\s*\(version [^()]*(?:\([^()]*\))?[^()]*\)")
_NAME_RE: Final = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*(?:\(version [^)]*\)\)?\s*)?$")

# The codes used by the endpoint itself (ClickHouse's ErrorCodes.cpp numbering).
SYNTAX_ERROR: Final = 62
BAD_ARGUMENTS: Final = 36
NOT_IMPLEMENTED: Final = 48
UNKNOWN_FORMAT: Final = 73
READONLY: Final = 164
REQUIRED_PASSWORD: Final = 194
TOO_MANY_SIMULTANEOUS_QUERIES: Final = 202
SESSION_NOT_FOUND: Final = 372
SESSION_IS_LOCKED: Final = 373
QUERY_WAS_CANCELLED: Final = 394
TOO_MANY_ROWS_OR_BYTES: Final = 396
SETTING_CONSTRAINT_VIOLATION: Final = 452
ACCESS_DENIED: Final = 497
AUTHENTICATION_FAILED: Final = 516
CANNOT_DECOMPRESS: Final = 271
HTTP_LENGTH_REQUIRED: Final = 381
CANNOT_FSYNC: Final = 75
UNKNOWN_EXCEPTION: Final = 1002

_NAMES: Final = {
    SYNTAX_ERROR: "SYNTAX_ERROR",
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    CANNOT_FSYNC: "CANNOT_FSYNC",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    UNKNOWN_FORMAT: "UNKNOWN_FORMAT",
    READONLY: "READONLY",
    REQUIRED_PASSWORD: "REQUIRED_PASSWORD",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    SESSION_NOT_FOUND: "SESSION_NOT_FOUND",
    SESSION_IS_LOCKED: "SESSION_IS_LOCKED",
    QUERY_WAS_CANCELLED: "QUERY_WAS_CANCELLED",
    TOO_MANY_ROWS_OR_BYTES: "TOO_MANY_ROWS_OR_BYTES",
    SETTING_CONSTRAINT_VIOLATION: "SETTING_CONSTRAINT_VIOLATION",
    ACCESS_DENIED: "ACCESS_DENIED",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    HTTP_LENGTH_REQUIRED: "HTTP_LENGTH_REQUIRED",
    UNKNOWN_EXCEPTION: "UNKNOWN_EXCEPTION",
}

# HTTP status per error name, as ClickHouse's HTTP handler answers; anything else is 500.
_STATUS_BY_NAME: Final = {
    "REQUIRED_PASSWORD": 401,
    "AUTHENTICATION_FAILED": 403,
    "ACCESS_DENIED": 403,
    "READONLY": 403,
    "SETTING_CONSTRAINT_VIOLATION": 403,
    "SYNTAX_ERROR": 400,
    "BAD_ARGUMENTS": 400,
    "CANNOT_DECOMPRESS": 400,
    "ILLEGAL_TYPE_OF_ARGUMENT": 400,
    "NUMBER_OF_ARGUMENTS_DOESNT_MATCH": 400,
    "TYPE_MISMATCH": 400,
    "INCORRECT_DATA": 400,
    "HTTP_LENGTH_REQUIRED": 411,
    "UNKNOWN_TABLE": 404,
    "UNKNOWN_DATABASE": 404,
    "UNKNOWN_FUNCTION": 404,
    "UNKNOWN_IDENTIFIER": 404,
    "UNKNOWN_TYPE": 404,
    "UNKNOWN_SETTING": 404,
    "UNKNOWN_FORMAT": 404,
    "UNKNOWN_AGGREGATE_FUNCTION": 404,
    "SESSION_NOT_FOUND": 404,
    "SESSION_IS_LOCKED": 423,
    "NOT_IMPLEMENTED": 501,
}


class ServeError(SinkError):
    """A request the endpoint answers with a ClickHouse exception.

    `status` overrides the HTTP status the name implies (413 for a body over a size limit).
    """

    def __init__(
        self, code: int, message: str, *, name: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.name = name or _NAMES.get(code, "UNKNOWN_EXCEPTION")
        self.message = message
        self._status = status

    @property
    def status(self) -> int:
        if self._status is not None:
            return self._status
        if self.name.startswith("CANNOT_PARSE"):
            return 400
        return _STATUS_BY_NAME.get(self.name, 500)

    def body(self, version: str) -> bytes:
        text = f"Code: {self.code}. DB::Exception: {self.message}. ({self.name}) (version {version})\n"
        return text.encode()

    @classmethod
    def from_engine(cls, exc: BaseException) -> ServeError:
        """Keep the code, name and message chDB reported."""
        text = str(exc).strip()
        start = text.find("Code:")
        match = _CODE_RE.match(text[start:]) if start >= 0 else None
        if match is None:
            return cls(UNKNOWN_EXCEPTION, text or type(exc).__name__)
        message = _VERSION_RE.sub("", match.group(2)).strip()
        while (inner := _CODE_RE.match(message)) is not None:  # nested "Code: N. DB::Exception: ..."
            message = inner.group(2).strip()
        name_match = _NAME_RE.search(message)
        name = name_match.group(1) if name_match else None
        while name_match:  # the name once, even when nested errors repeat it
            message = message[: name_match.start()].rstrip().rstrip(".")
            again = _NAME_RE.search(message)
            name_match = again if again and again.group(1) == name_match.group(1) else None
        return cls(int(match.group(1)), message, name=name)


def budget_full() -> ServeError:
    """A reader's request that the readers' in-flight budget cannot hold (503)."""
    msg = (
        "Readers' requests in flight hold the whole --serve-reader-max-inflight-mb budget; "
        "retry later or ask for a smaller result"
    )
    return ServeError(TOO_MANY_SIMULTANEOUS_QUERIES, msg, status=503)
