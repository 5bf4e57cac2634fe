"""Exceptions raised by the write side.

    SinkError
    ├── SinkUnavailableError     the database cannot be reached or timed out (retry later)
    └── SinkRejectedError        the database refused the data or the statement (retrying will not help)

Driver exceptions are translated at the boundary (sinks.clickhouse.sink) with
`raise ... from exc`, so callers never depend on clickhouse-connect's types.
"""

from __future__ import annotations


class SinkError(Exception):
    """Root of every error raised by the sinks package."""

    def __init__(self, message: str, *, table: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.code = code


class SinkUnavailableError(SinkError):
    retryable = True


class SinkRejectedError(SinkError):
    retryable = False
