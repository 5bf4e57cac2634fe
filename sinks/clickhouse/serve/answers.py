"""A reader's answer, taken from the engine through a pipe and never more than a cap.

chDB formats a query's whole answer into one buffer before returning it,
outside the query's memory tracker, and `max_result_bytes` counts the result's
blocks, not the formatted answer. Where the answer is much larger than its
blocks, nothing bounded it: a constant, `LowCardinality` or `Enum` value, or a
long column name, repeated on every row (a 1 KB request answered 1.5 GB and
took the serving process, the worker under `run --serve`, to 5.2 GB RSS).

So a reader's statement that reads rows (SELECT, WITH) runs with INTO OUTFILE
a named pipe in a private directory. The engine writes the answer as it
formats it, a write buffer at a time, and a thread of the endpoint reads it;
once the answer passes the cap the thread stops reading and closes the pipe,
the engine's next write fails, and the query ends: the answer never takes more
than the cap plus a buffer. The bytes are those of the engine's own answer, in
every format (tests/component/test_serve_reader_gate.py compares them).

The answer is also held against the readers' in-flight budget as it arrives
(`hold`), not only once it is whole: four readers' answers of 240 MB each took
the process to 2.6 GB RSS against a 512 MiB budget, each read whole (and copied)
before the budget was asked. An answer the budget cannot hold stops being read
at once and is refused like any result that does not fit.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sinks.clickhouse.serve.errors import (
    TOO_MANY_ROWS_OR_BYTES,
    UNKNOWN_EXCEPTION,
    ServeError,
    budget_full,
)
from sinks.clickhouse.serve.handles import quote_literal

_READ_BYTES: Final = 1 << 20


def hold_any(_size: int) -> bool:
    """A hold that holds any answer (no budget: the writer's)."""
    return True


class _PipeReader:
    """Reads the pipe until its writers are gone, more than `cap` bytes came, or `hold` refused them."""

    def __init__(self, fd: int, cap: int, hold: Callable[[int], bool]) -> None:
        self.fd = fd
        self.cap = cap
        self.hold = hold
        # BytesIO, not bytearray: getvalue() hands over its buffer without a copy, which would
        # double what the budget holds for the answer
        self.answer = io.BytesIO()
        self.over = False
        self.refused = False
        self.failure: OSError | None = None

    def run(self) -> None:
        # poll, not select: a busy server's descriptors go past select's 1,024
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        try:
            while True:
                poller.poll()
                try:
                    data = os.read(self.fd, _READ_BYTES)
                except BlockingIOError:
                    continue
                if not data:
                    return  # every writer closed: the whole answer is here
                size = self.answer.tell() + len(data)
                if size > self.cap:
                    self.over = True
                    return
                if not self.hold(size):
                    self.refused = True
                    self.answer = io.BytesIO()  # dropped with its share of the budget
                    return
                self.answer.write(data)
        except OSError as exc:
            self.failure = exc
        finally:
            os.close(self.fd)  # the engine's next write fails: its query ends


def capped_answer(
    run: Callable[[bytes], Any],
    statement: bytes,
    fmt: str,
    cap: int,
    directory: Path,
    hold: Callable[[int], bool] = hold_any,
) -> tuple[bytes, Any]:
    """(answer, the engine's result) of `statement` (no FORMAT clause) answered in `fmt`, read
    through a pipe in `directory`; ServeError TOO_MANY_ROWS_OR_BYTES past `cap` bytes.

    `hold(n)` is asked before the answer grows to n bytes; False stops the answer there
    (ServeError TOO_MANY_SIMULTANEOUS_QUERIES, 503: the readers' budget is full), and `hold` has
    then given back what the answer held, so that the answers read beside it may grow.
    """
    path = directory / uuid.uuid4().hex
    os.mkfifo(path, 0o600)
    try:
        reader = _PipeReader(os.open(path, os.O_RDONLY | os.O_NONBLOCK), cap, hold)
        # Held open until the query has ended, so that the reader sees the end of the answer only
        # then, and not before the engine opened the pipe (or when it never does, having failed).
        keep_open = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        thread = threading.Thread(target=reader.run, name="tykpulse-serve-answer", daemon=True)
        thread.start()
        target = quote_literal(str(path)).encode()
        try:
            result = run(statement + b" INTO OUTFILE " + target + b" TRUNCATE FORMAT " + fmt.encode())
        except ServeError:
            if not (reader.over or reader.refused):
                raise
            result = None
        finally:
            os.close(keep_open)
            thread.join()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if reader.over:
        msg = f"Limit for result exceeded, max bytes: {cap} (the formatted answer; max_result_bytes)"
        raise ServeError(TOO_MANY_ROWS_OR_BYTES, msg)
    if reader.refused:
        raise budget_full()
    if reader.failure is not None:
        msg = f"Cannot read the answer: {reader.failure}"
        raise ServeError(UNKNOWN_EXCEPTION, msg)
    return reader.answer.getvalue(), result
