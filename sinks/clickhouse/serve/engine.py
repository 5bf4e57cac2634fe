"""Runs parsed HTTP queries on the embedded engine this process owns.

Handles are pooled per role and lent to one request at a time; requests with
a `session_id` get the session's own handle. A statement that changes a
handle's state (SET, USE, CREATE TEMPORARY TABLE) outside a session closes the
handle afterwards instead of returning it to the pool, so nothing a client
does leaks into another client's request, as in ClickHouse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from sinks.clickhouse.serve.errors import TOO_MANY_SIMULTANEOUS_QUERIES, UNKNOWN_EXCEPTION, ServeError
from sinks.clickhouse.serve.handles import Handle, Role, quote_literal
from sinks.clickhouse.serve.request import HttpQuery
from sinks.clickhouse.serve.sessions import Sessions
from sinks.clickhouse.serve.statements import (
    changes_handle_state,
    check_reader_statement,
    first_keyword,
    output_format,
    split_insert_data,
)

log = logging.getLogger(__name__)

QUEUE_TIMEOUT_S: Final = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    body: bytes
    fmt: str | None
    summary: dict[str, str]


def _summary(result: Any, elapsed_s: float, *, insert: bool) -> dict[str, str]:
    summary = {
        "read_rows": str(result.rows_read()),
        "read_bytes": str(result.bytes_read()),
        "written_rows": str(result.rows_written()),
        "written_bytes": str(result.bytes_written()),
        "elapsed_ns": str(int(elapsed_s * 1e9)),
    }
    if insert and summary["written_rows"] == "0":
        # chDB counts rows of an INSERT ... FORMAT as read, not written
        summary["written_rows"], summary["written_bytes"] = summary["read_rows"], summary["read_bytes"]
    return summary


def _insert_from_file(handle: Handle, template: bytes, data: bytes) -> Any:
    """Run `template` with {path} naming a temporary file holding `data`."""
    with tempfile.NamedTemporaryFile(prefix="tykpulse-insert-", suffix=".data", delete=False) as file:
        file.write(data)
    try:
        return handle.run(template.replace(b"{path}", quote_literal(file.name).encode()))
    finally:
        os.unlink(file.name)


class ChdbEngine:
    """The embedded database at `path`, shared with every other chDB client of this process."""

    def __init__(self, path: Path, *, max_sessions: int = 64, max_concurrent_queries: int = 16) -> None:
        # clickhouse-connect's chdb client opens os.path.realpath(path): the same string, the same engine
        self.connection_string = os.path.realpath(path)
        self.sessions = Sessions(max_sessions)
        self._idle: dict[Role, list[Handle]] = {Role.READER: [], Role.WRITER: []}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrent_queries)
        self._closed = False
        self.version = ""
        self.timezone = "UTC"

    def open(self) -> None:
        Path(self.connection_string).mkdir(parents=True, exist_ok=True)
        handle = self._open_handle(Role.READER)
        row = handle.run(b"SELECT version(), timezone()").bytes().decode().strip().split("\t")
        self.version, self.timezone = row[0], row[1]
        self._return(handle)

    def _open_handle(self, role: Role) -> Handle:
        try:
            return Handle.open(self.connection_string, role)
        except ServeError:
            raise
        except Exception as exc:  # chdb.connect: RuntimeError for a second path in this process
            raise ServeError.from_engine(exc) from exc

    def run(self, query: HttpQuery, *, role: Role, user: str) -> Outcome:
        if role is Role.READER:
            check_reader_statement(query.sql)
        if not self._slots.acquire(timeout=QUEUE_TIMEOUT_S):
            msg = "Too many simultaneous queries"
            raise ServeError(TOO_MANY_SIMULTANEOUS_QUERIES, msg)
        try:
            with self._borrow(query, role, user) as handle:
                return self._execute(handle, query, in_session=query.session_id is not None)
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def _borrow(self, query: HttpQuery, role: Role, user: str) -> Iterator[Handle]:
        if self._closed:
            msg = "The endpoint is shutting down"
            raise ServeError(UNKNOWN_EXCEPTION, msg)
        if query.session_id is not None:
            with self.sessions.borrow(
                query.session_id,
                user=user,
                role=role,
                timeout_s=query.session_timeout_s,
                check=query.session_check,
                open_handle=self._open_handle,
            ) as handle:
                yield handle
            return
        handle = self._take(role)
        reusable = False
        try:
            yield handle
            reusable = not changes_handle_state(query.sql)
        finally:
            if reusable:
                self._return(handle)
            else:
                handle.close()

    def _take(self, role: Role) -> Handle:
        with self._lock:
            if self._idle[role]:
                return self._idle[role].pop()
        return self._open_handle(role)

    def _return(self, handle: Handle) -> None:
        with self._lock:
            if not self._closed:
                self._idle[handle.role].append(handle)
                return
        handle.close()

    def _execute(self, handle: Handle, query: HttpQuery, *, in_session: bool) -> Outcome:
        handle.use(query.database or (None if in_session else "default"))
        handle.apply_settings(query.settings)
        fmt = output_format(query.sql, query.default_format)
        started = time.perf_counter()
        insert = split_insert_data(query.sql)
        if insert is None:
            result = handle.run(query.sql, fmt or "TabSeparated", query.params)
        else:
            result = _insert_from_file(handle, *insert)
        elapsed = time.perf_counter() - started
        keyword = first_keyword(query.sql)
        if in_session and keyword in ("SET", "USE"):
            handle.forget_state()
        body = result.bytes() or b""
        return Outcome(body, fmt, _summary(result, elapsed, insert=keyword == "INSERT"))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [h for handles in self._idle.values() for h in handles]
            for handles in self._idle.values():
                handles.clear()
        for handle in idle:
            handle.close()
        self.sessions.close()


def summary_header(outcome: Outcome) -> str:
    return json.dumps(outcome.summary, separators=(",", ":"))
