"""What a statement is, read from its text: its first keyword, its output format, INSERT data.

These are conveniences of the transport (which format to answer in, where an
INSERT's data starts). They decide nothing about access: readers go through
the gate (gate.py), which has the engine parse and check each statement.
"""

from __future__ import annotations

import re
from typing import Final

_LEADING_NOISE: Final = re.compile(rb"\A(?:\s+|--[^\n]*(?:\n|\Z)|#[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.DOTALL)
_FIRST_WORD: Final = re.compile(rb"[A-Za-z]+")
# the engine's canonical text quotes a format name that is also a keyword: FORMAT `Values`
_TRAILING_FORMAT: Final = re.compile(rb"\bFORMAT\s+(?:`(\w+)`|(\w+))\s*;?\s*\Z", re.IGNORECASE)

RESULT_KEYWORDS: Final = frozenset(
    {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "VALUES"}
)
# Statements whose answer holds rows a reader chooses (and so may be any size): the others answer
# with what their text or the catalogue holds.
ROW_KEYWORDS: Final = frozenset({"SELECT", "WITH"})
# Statements that change the handle's own state; without a session they must
# not leak into the next request that borrows the handle.
STATEFUL_KEYWORDS: Final = frozenset({"SET", "USE"})

_INSERT_FORMAT: Final = re.compile(rb"\A\s*INSERT\s+INTO\s.*?\bFORMAT\s+(\w+)", re.IGNORECASE | re.DOTALL)
_SETTINGS_CLAUSE: Final = re.compile(rb"\bSETTINGS\b", re.IGNORECASE)
_HEAD_BYTES: Final = 65536


def split_insert_data(sql: bytes) -> tuple[bytes, bytes] | None:
    """(`INSERT ... FROM INFILE {path} [SETTINGS ...] FORMAT x` template, data) for an INSERT
    carrying its data after FORMAT; None for anything else.

    chDB does not reliably read binary data inline in a query (Arrow bodies
    arrive truncated), so the endpoint hands the data over as a file. As in
    ClickHouse, the data starts after the first newline that follows the
    format name, or after the whitespace when there is no newline.
    """
    match = _INSERT_FORMAT.match(sql[:_HEAD_BYTES])
    if match is None:
        return None
    start = match.end()
    while start < len(sql) and sql[start] in b" \t\r\n":
        start += 1
        if sql[start - 1] == ord("\n"):
            break
    if start >= len(sql):
        return None
    head = sql[: match.start(1)].rstrip()[: -len(b"FORMAT")].rstrip()
    settings = _SETTINGS_CLAUSE.search(head)
    table, clause = (head[: settings.start()], b" " + head[settings.start() :]) if settings else (head, b"")
    return table.rstrip() + b" FROM INFILE {path}" + clause + b" FORMAT " + match.group(1), sql[start:]


def first_keyword(sql: bytes) -> str:
    head = _LEADING_NOISE.sub(b"", sql[:4096], count=1)
    match = _FIRST_WORD.match(head)
    return match.group(0).decode().upper() if match else ""


def without_format(sql: bytes) -> bytes:
    """The statement without its trailing FORMAT clause (as output_format reads it)."""
    tail = max(len(sql) - 256, 0)
    match = _TRAILING_FORMAT.search(sql, tail)
    return sql[: match.start()].rstrip() if match else sql.rstrip().removesuffix(b";").rstrip()


def output_format(sql: bytes, default_format: str) -> str | None:
    """The format a result-producing statement answers in; None for statements without a result."""
    if first_keyword(sql) not in RESULT_KEYWORDS:
        return None
    match = _TRAILING_FORMAT.search(sql[-256:])
    return (match.group(1) or match.group(2)).decode() if match else default_format


def changes_handle_state(sql: bytes) -> bool:
    keyword = first_keyword(sql)
    if keyword in STATEFUL_KEYWORDS:
        return True
    return keyword == "CREATE" and b"TEMPORARY" in sql[:256].upper()
