"""Runs parsed HTTP queries on the embedded engine this process owns.

Readers and the writer take different roads:

- A reader's statement goes through the gate (gate.py: parsed by the engine,
  checked against the allow-list, run in its canonical form) on a read-only
  handle opened with the reader's limits and settings (handles.py). Reader
  handles are pooled by those settings. Readers have no server-side session
  state (a `session_id` is accepted and holds nothing), so they cannot use up
  sessions, and they have their own query slots, so they cannot hold up the
  writer's inserts.
- The writer's handles are pooled and lent to one request at a time;
  requests with a `session_id` get the session's own handle. A statement that
  changes a handle's state (SET, USE, CREATE TEMPORARY TABLE) outside a
  session closes the handle afterwards instead of returning it to the pool,
  so nothing leaks into another request, as in ClickHouse.

A reader's query may carry a ticket (cancellation.py): the server cancels it
when the client goes away, through `cancel`, on a handle of its own that runs
nothing else. Writers' statements carry none, so nothing cancels them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from sinks.clickhouse.client import prepare_embedded
from sinks.clickhouse.durable import FilesystemSync
from sinks.clickhouse.serve.answers import capped_answer, hold_any
from sinks.clickhouse.serve.cancellation import Ticket
from sinks.clickhouse.serve.errors import (
    CANNOT_FSYNC,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    UNKNOWN_EXCEPTION,
    ServeError,
)
from sinks.clickhouse.serve.gate import admit, check_size
from sinks.clickhouse.serve.handles import Handle, Role, quote_literal
from sinks.clickhouse.serve.reader_policy import (
    READER_HOME,
    ReaderLimits,
    check_format,
    reader_database,
    reader_settings,
    reads_only_settings,
)
from sinks.clickhouse.serve.request import HttpQuery
from sinks.clickhouse.serve.sessions import Sessions
from sinks.clickhouse.serve.statements import (
    ROW_KEYWORDS,
    changes_handle_state,
    first_keyword,
    output_format,
    split_insert_data,
    without_format,
)

log = logging.getLogger(__name__)

QUEUE_TIMEOUT_S: Final = 30.0
# how often a query waiting for a slot looks whether it was cancelled (its client gone)
SLOT_POLL_S: Final = 0.1
# distinct reader settings kept open at once; clients send the same settings every time
MAX_IDLE_READER_HANDLES: Final = 32
# reader statements whose gate verdict is remembered (only admitted ones), and the bytes they may hold:
# a statement may be up to max_query_size (256 KiB) and is kept twice (as sent and canonical), so a
# reader sending distinct long statements could otherwise hold ~0.5 GB here
MAX_REMEMBERED_STATEMENTS: Final = 1024
MAX_REMEMBERED_BYTES: Final = 16 << 20

# (readonly level, *sorted settings)
SettingsKey = tuple[object, ...]
# (statement as sent, sorted query parameters, current database): what a gate verdict depends on
AdmitKey = tuple[bytes, tuple[tuple[str, str], ...], str]


@dataclasses.dataclass(frozen=True, slots=True)
class _AnswerLimit:
    """A reader's answer: at most `cap` bytes, and only what `hold` agrees to hold."""

    cap: int
    hold: Callable[[int], bool]


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

    def __init__(
        self,
        path: Path,
        *,
        max_sessions: int = 64,
        max_concurrent_queries: int = 16,
        reader_limits: ReaderLimits | None = None,
        max_concurrent_readers: int = 4,
    ) -> None:
        self.path = Path(path)
        # clickhouse-connect's chdb client opens os.path.realpath(path): the same string, the same engine
        self.connection_string = os.path.realpath(path)
        self.sessions = Sessions(max_sessions)
        self.reader_limits = reader_limits or ReaderLimits()
        self._idle_writers: list[Handle] = []
        self._idle_readers: dict[SettingsKey, list[Handle]] = {}
        self._admitted: collections.OrderedDict[AdmitKey, tuple[bytes, bool]] = collections.OrderedDict()
        self._admitted_bytes = 0
        self._lock = threading.Lock()
        self._slots = {
            Role.READER: threading.BoundedSemaphore(max_concurrent_readers),
            Role.WRITER: threading.BoundedSemaphore(max_concurrent_queries),
        }
        self._closed = False
        # the server's own handle for KILLs of reader tickets, opened on first use
        self._killer: Handle | None = None
        self._kill_lock = threading.Lock()
        self.version = ""
        self.timezone = "UTC"
        self._sync: FilesystemSync | None = None
        # set by a failed sync: every later INSERT is refused (fail-stop, see _made_durable)
        self._disk_failure: str | None = None
        # the pipes readers' answers come through (answers.py), private to this process's user
        self._answers: Path | None = None

    def open(self) -> None:
        prepare_embedded(self.path)  # the path as given: a link planted there is refused, not followed
        self._sync = FilesystemSync(self.path)
        handle = self._open_handle(Role.WRITER)
        try:
            row = handle.run(b"SELECT version(), timezone()").bytes().decode().strip().split("\t")
            handle.run(f"CREATE DATABASE IF NOT EXISTS {READER_HOME} ENGINE = Memory".encode())
        finally:
            handle.close()
        self.version, self.timezone = row[0], row[1]
        self._answers = Path(tempfile.mkdtemp(prefix="tykpulse-answers-"))

    def _open_handle(self, role: Role, settings: dict[str, str] | None = None, readonly: int = 1) -> Handle:
        try:
            return Handle.open(self.connection_string, role, settings, readonly)
        except ServeError:
            raise
        except Exception as exc:  # chdb.connect: RuntimeError for a second path in this process
            raise ServeError.from_engine(exc) from exc

    def run(
        self,
        query: HttpQuery,
        *,
        role: Role,
        user: str,
        ticket: Ticket | None = None,
        while_running: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
        hold: Callable[[int], bool] = hold_any,
    ) -> Outcome:
        """Run `query`; a reader's under `ticket`, so that `cancel(ticket)` can stop it.

        `while_running()` is entered once the query holds its slot and left when it gives it back.
        `hold(n)` is asked before a reader's answer grows to n bytes (answers.py); False refuses it.
        """
        if self._closed:
            msg = "The endpoint is shutting down"
            raise ServeError(UNKNOWN_EXCEPTION, msg)
        ticket = ticket or Ticket()
        slots = self._slots[role]
        self._take_slot(slots, ticket)
        try:
            with while_running():
                if role is Role.READER:
                    return self._read(query, ticket, hold)
                with self._borrow_writer(query, user) as handle:
                    return self._execute(handle, query, in_session=query.session_id is not None)
        finally:
            slots.release()

    @staticmethod
    def _take_slot(slots: threading.BoundedSemaphore, ticket: Ticket) -> None:
        """Wait up to QUEUE_TIMEOUT_S for a slot; a cancelled ticket stops the wait at once."""
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while not slots.acquire(timeout=SLOT_POLL_S):
            ticket.check()
            if time.monotonic() >= deadline:
                msg = "Too many simultaneous queries"
                raise ServeError(TOO_MANY_SIMULTANEOUS_QUERIES, msg)

    def _read(self, query: HttpQuery, ticket: Ticket, hold: Callable[[int], bool]) -> Outcome:
        settings = reader_settings(query.settings, self.reader_limits)
        database = reader_database(query.database)
        with self._reader_handle(settings, readonly=1) as handle:
            handle.use(database)
            sql, settings_only = self._admit(handle, query, database)
            # the format asked for by default_format, or the statement's own (checked by the gate too)
            check_format(output_format(sql, query.default_format))
            checked = dataclasses.replace(query, sql=sql, settings=settings, database=database)
            # cancelled while it waited for a slot or the gate: not started at all
            ticket.check()
            # the formatted answer is bounded too, not only its blocks (answers.py)
            answer = _AnswerLimit(int(settings["max_result_bytes"]), hold)
            if not settings_only:
                return self._execute(handle, checked, in_session=False, marker=ticket.marker, answer=answer)
        with self._reader_handle(settings, readonly=2) as handle:
            return self._execute(handle, checked, in_session=False, marker=ticket.marker, answer=answer)

    def _admit(self, handle: Handle, query: HttpQuery, database: str) -> tuple[bytes, bool]:
        """The gate's verdict (canonical statement, reads only system.settings), remembered.

        The verdict depends only on the text, the query parameters and the
        current database, and dashboards send the same queries again and
        again: a repeat skips the gate's two engine calls.
        """
        check_size(query.sql)  # before the statement is hashed, escaped or sent anywhere
        key = (query.sql, tuple(sorted(query.params.items())), database)
        with self._lock:
            admitted = self._admitted.get(key)
            if admitted is not None:
                self._admitted.move_to_end(key)
                return admitted
        sql, tree = admit(handle, query.sql, query.params, database)
        admitted = (sql, reads_only_settings(tree, database))
        size = _remembered_size(key, admitted)
        with self._lock:
            if key not in self._admitted:
                self._admitted[key] = admitted
                self._admitted_bytes += size
            while (
                len(self._admitted) > MAX_REMEMBERED_STATEMENTS or self._admitted_bytes > MAX_REMEMBERED_BYTES
            ):
                evicted = self._admitted.popitem(last=False)
                self._admitted_bytes -= _remembered_size(*evicted)
        return admitted

    def remembered(self) -> tuple[int, int]:
        """Statements whose verdict is remembered, and the bytes of their text."""
        with self._lock:
            return len(self._admitted), self._admitted_bytes

    @contextlib.contextmanager
    def _reader_handle(self, settings: dict[str, str], *, readonly: int) -> Iterator[Handle]:
        """A pooled reader handle for these settings, closed instead of pooled after an error."""
        key = (readonly, *sorted(settings.items()))
        with self._lock:
            idle = self._idle_readers.get(key)
            handle = idle.pop() if idle else None
        if handle is None:
            handle = self._open_handle(Role.READER, settings, readonly)
        try:
            yield handle
        except BaseException:
            handle.close()
            raise
        self._return_reader(key, handle)

    def _return_reader(self, key: SettingsKey, handle: Handle) -> None:
        to_close = [handle]
        with self._lock:
            if not self._closed:
                # most recently used last, so the least recently used settings are dropped first
                idle = self._idle_readers.pop(key, [])
                idle.append(handle)
                self._idle_readers[key] = idle
                to_close = self._evict_readers_locked()
        for idle_handle in to_close:
            idle_handle.close()

    def _evict_readers_locked(self) -> list[Handle]:
        evicted: list[Handle] = []
        while sum(len(idle) for idle in self._idle_readers.values()) > MAX_IDLE_READER_HANDLES:
            oldest = next(iter(self._idle_readers))
            evicted.append(self._idle_readers[oldest].pop(0))
            if not self._idle_readers[oldest]:
                del self._idle_readers[oldest]
        return evicted

    @contextlib.contextmanager
    def _borrow_writer(self, query: HttpQuery, user: str) -> Iterator[Handle]:
        role = Role.WRITER
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
        handle = self._take_writer()
        reusable = False
        try:
            yield handle
            reusable = not changes_handle_state(query.sql)
        finally:
            if reusable:
                self._return_writer(handle)
            else:
                handle.close()

    def _take_writer(self) -> Handle:
        with self._lock:
            if self._idle_writers:
                return self._idle_writers.pop()
        return self._open_handle(Role.WRITER)

    def _return_writer(self, handle: Handle) -> None:
        with self._lock:
            if not self._closed:
                self._idle_writers.append(handle)
                return
        handle.close()

    def _execute(
        self,
        handle: Handle,
        query: HttpQuery,
        *,
        in_session: bool,
        marker: bytes = b"",
        answer: _AnswerLimit | None = None,
    ) -> Outcome:
        """Run `query` on `handle`; with `answer`, a statement that reads rows is answered through a
        pipe and refused past its cap of formatted answer or once its hold refuses (answers.py)."""
        handle.use(query.database or (None if in_session else "default"))
        handle.apply_settings(query.settings)
        fmt = output_format(query.sql, query.default_format)
        answer_fmt = fmt or "TabSeparated"
        started = time.perf_counter()
        keyword = first_keyword(query.sql)
        if keyword == "INSERT":
            self._refuse_after_disk_failure()
        insert = split_insert_data(query.sql)
        body: bytes | None = None
        if insert is not None:
            result = _insert_from_file(handle, *insert)
        elif answer is not None and keyword in ROW_KEYWORDS and self._answers is not None:
            body, result = capped_answer(
                lambda sql: handle.run(sql, answer_fmt, query.params),
                marker + without_format(query.sql),
                answer_fmt,
                answer.cap,
                self._answers,
                answer.hold,
            )
        else:
            # the marker (a comment) only in what the engine runs: format and keyword come from the statement
            result = handle.run(marker + query.sql, answer_fmt, query.params)
        if keyword == "INSERT":
            self._made_durable()
        elapsed = time.perf_counter() - started
        if in_session and keyword in ("SET", "USE"):
            handle.forget_state()
        if body is None:
            body = result.bytes() or b""
        return Outcome(body, fmt, _summary(result, elapsed, insert=keyword == "INSERT"))

    def _made_durable(self) -> None:
        """An insert is acknowledged only once it survives power loss (durable.py: ClickHouse fsyncs
        nothing by default, and a writer drops what it sent once acknowledged).

        A failed sync is fail-stop: a writer's retry of that insert would be dropped as a duplicate
        (ClickHouse has its token) and then acknowledged, so every insert is refused from then on and
        the writers keep their data (each in its log) until the disk is checked and the endpoint restarted.
        """
        self._refuse_after_disk_failure()
        if self._sync is None:
            return
        try:
            self._sync.sync()
        except OSError as exc:
            self._disk_failure = f"the disk failed to take an acknowledged insert ({exc})"
            log.error("%s: every insert is refused until the endpoint restarts", self._disk_failure)
            self._refuse_after_disk_failure()

    def _refuse_after_disk_failure(self) -> None:
        if self._disk_failure is not None:
            msg = f"{self._disk_failure}; restart the endpoint once the disk is checked"
            raise ServeError(CANNOT_FSYNC, msg)

    def cancel(self, ticket: Ticket) -> None:
        """Stop the query running under `ticket`, or keep it from starting (raises ServeError).

        A query that is about to start when this runs is not in `system.processes`
        yet: the caller repeats the call until the query has ended.
        """
        ticket.cancel()
        with self._kill_lock:
            if self._closed:
                return
            if self._killer is None:
                self._killer = self._open_handle(Role.WRITER)
            self._killer.run(ticket.kill_statement())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = self._idle_writers + [h for handles in self._idle_readers.values() for h in handles]
            self._idle_writers.clear()
            self._idle_readers.clear()
        with self._kill_lock:
            if self._killer is not None:
                idle.append(self._killer)
                self._killer = None
        for handle in idle:
            handle.close()
        self.sessions.close()
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        if self._answers is not None:
            shutil.rmtree(self._answers, ignore_errors=True)
            self._answers = None


def summary_header(outcome: Outcome) -> str:
    return json.dumps(outcome.summary, separators=(",", ":"))


def _remembered_size(key: AdmitKey, admitted: tuple[bytes, bool]) -> int:
    """The bytes a remembered verdict holds: the statement as sent, its parameters, the canonical text."""
    sql, params, _ = key
    return len(sql) + sum(len(name) + len(value) for name, value in params) + len(admitted[0])
