"""Before the embedded engine opens its directory: forget insert tokens whose parts never landed.

A non-replicated MergeTree table remembers the tokens of its recent inserts in
`<table>/deduplication_logs/deduplication_log_<n>.txt`, one line per block:
`1<TAB>part<TAB>block id` when a block is added, `2<TAB>...` when its part is
dropped. ClickHouse writes the `1` line *before* it renames the block's
temporary part into place. A process killed between the two (SIGKILL, the OOM
killer) leaves a token whose rows are nowhere, and the retry of that insert,
with the same token, is dropped as a duplicate in that table, while the other
tables the same flush fans out to have it. The embedded engine runs inside the
worker, so every kill of a worker is a kill of the engine: the crash test
caught one flush of 32 messages missing from traffic_1m while traffic_1h and
ingest_health counted it.

So, while no engine holds the directory (its lock, `status`, is taken here for
the while), each table's log is read, and a token still live for a part above
every part on disk gets the `2` line ClickHouse itself writes when it drops a
part. Then the retry lands. A log this module cannot read is left as it is,
with a warning. A ClickHouse server killed mid-insert has the same gap, in
files that are the server's own (docs/guarantees.md).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

LOGS_DIRECTORY: Final = "deduplication_logs"
_LOG_FILE: Final = re.compile(r"deduplication_log_(\d+)\.txt")
# <partition id>_<min block>_<max block>_<level>[_<mutation>]; partition ids hold no "_"
_PART: Final = re.compile(r"([^_]+)_(\d+)_(\d+)_(\d+)(?:_\d+)?")
_ADD: Final = "1"
_DROP: Final = "2"


@dataclasses.dataclass(frozen=True, slots=True)
class ForgottenBlocks:
    """Tokens of one table whose parts were never written, now dropped from its log."""

    table: str
    parts: tuple[str, ...]


class UnreadableLogError(Exception):
    """A deduplication log in a form this module does not know: it is left untouched."""


def forget_unwritten_blocks(root: Path) -> list[ForgottenBlocks]:
    """Drop, from every table's deduplication log under `root`, the tokens of parts never written.

    Does nothing (returns []) while an engine holds the directory, this
    process's or another's (its logs are open and loaded then), or when the
    last engine there stopped cleanly (it removes its `status` file; a killed
    one cannot).
    """
    status = root / "status"
    if not status.is_file():
        return []
    fd = os.open(status, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        if not _still_at(fd, status):
            return []  # an engine stopped and another started meanwhile: this lock guards nothing
        forgotten = []
        for name, table in _tables(root):
            try:
                parts = _forget_in_table(table)
            except UnreadableLogError as exc:
                log.warning("ClickHouse deduplication log left as it is table=%s: %s", name, exc)
                continue
            if parts:
                forgotten.append(ForgottenBlocks(name, parts))
                log.warning(
                    "ClickHouse forgot %d insert token(s) whose parts were never written (the engine "
                    "was killed mid-insert), so the retry lands table=%s parts=%s",
                    len(parts),
                    name,
                    ",".join(parts),
                )
        return forgotten
    finally:
        os.close(fd)  # releases the lock


def _still_at(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _tables(root: Path) -> Iterator[tuple[str, Path]]:
    """(name, directory) of every table with a deduplication log: `<db>.<table>` where known."""
    names: dict[Path, str] = {}
    data = root / "data"
    if data.is_dir():
        for database in sorted(data.iterdir()):
            if database.is_dir():
                for table in sorted(database.iterdir()):
                    names.setdefault(table.resolve(), f"{database.name}.{table.name}")
    candidates = set(names)
    store = root / "store"
    if store.is_dir():
        for prefix in store.iterdir():
            if prefix.is_dir():
                candidates.update(table.resolve() for table in prefix.iterdir())
    for directory in sorted(candidates):
        if (directory / LOGS_DIRECTORY).is_dir():
            yield names.get(directory, str(directory)), directory


def _forget_in_table(table: Path) -> tuple[str, ...]:
    files = _log_files(table / LOGS_DIRECTORY)
    if not files:
        return ()
    live: dict[str, str] = {}  # block id -> part, for the tokens ClickHouse will load as seen
    torn_at: int | None = None
    for path in files:
        lines, torn_at = _complete_lines(path, last=path == files[-1])
        for number, line in enumerate(lines, start=1):
            fields = line.split("\t")
            if len(fields) != 3 or fields[0] not in (_ADD, _DROP) or not _PART.fullmatch(fields[1]):
                msg = f"{path.name} line {number} is not <1|2> TAB <part> TAB <block id>"
                raise UnreadableLogError(msg)
            operation, part, block = fields
            if operation == _ADD:
                live[block] = part
            else:
                live.pop(block, None)
    if torn_at is not None:
        # ClickHouse appends here next: a torn line would swallow the start of its next record
        os.truncate(files[-1], torn_at)
    # Block numbers grow with every insert, and a killed insert is the last one: its part
    # names a block above every part on disk (merged parts keep their sources' range). Older
    # parts gone for other reasons (emptied by a TTL) are below it, and are left alone.
    newest = _newest_written_block(table)
    unwritten = {block: part for block, part in live.items() if _max_block(part) > newest}
    if unwritten:
        _append(files[-1], "".join(f"{_DROP}\t{part}\t{block}\n" for block, part in unwritten.items()))
    return tuple(sorted(set(unwritten.values())))


def _log_files(directory: Path) -> list[Path]:
    numbered = []
    for path in directory.iterdir():
        match = _LOG_FILE.fullmatch(path.name)
        if match is None:
            msg = f"unexpected file {path.name} in {LOGS_DIRECTORY}"
            raise UnreadableLogError(msg)
        numbered.append((int(match[1]), path))
    return [path for _, path in sorted(numbered)]


def _complete_lines(path: Path, *, last: bool) -> tuple[list[str], int | None]:
    """The log's whole lines, and where a torn last line (the engine killed mid-write) starts."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    torn_at = None
    if end != len(data):
        if not last:
            msg = f"{path.name} ends inside a line, and it is not the newest log"
            raise UnreadableLogError(msg)
        torn_at = end
        data = data[:end]
    try:
        return data.decode("ascii").splitlines(), torn_at
    except UnicodeDecodeError as exc:
        msg = f"{path.name} is not text"
        raise UnreadableLogError(msg) from exc


def _max_block(part: str) -> int:
    match = _PART.fullmatch(part)
    return -1 if match is None else int(match[3])


def _newest_written_block(table: Path) -> int:
    """The highest block of any part on disk (active, merged or not yet removed); -1 if none."""
    return max((_max_block(entry.name) for entry in table.iterdir()), default=-1)


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
