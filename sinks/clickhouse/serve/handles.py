"""chDB connection handles, one per query in flight, with the state we put on them.

chDB runs one engine per process; any number of handles share it, and each
handle keeps its own settings and current database. A handle is lent to one
request at a time.

Writer handles take settings as URL parameters with every request: a handle
remembers which ones it applied with SET and changes only the difference (a
client sends the same settings each time, so usually nothing).

Reader handles are opened with their settings (the limits and what the reader
asked for, see reader_policy) and then `readonly = 1`, which the engine never
lets a handle undo: it refuses writes, SET, SETTINGS clauses that change
anything, temporary tables and most table functions by itself, a second wall
behind the gate. A reader asking for other settings gets another handle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any, Final

import chdb

from sinks.clickhouse.serve.errors import UNKNOWN_FORMAT, ServeError

_SETTING_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Output "formats" chDB's connection.query() handles in Python instead of passing them to the
# engine (chdb/state/sqlitelike.py): only engine formats may reach it.
WRAPPER_FORMATS: Final = frozenset({"dataframe", "datastore", "arrowtable"})
_UNKNOWN: Final = "\x00unknown"


class Role(enum.Enum):
    READER = "reader"
    WRITER = "writer"


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclasses.dataclass(eq=False)
class Handle:
    conn: Any
    role: Role
    applied: dict[str, str] = dataclasses.field(default_factory=dict)
    database: str | None = "default"

    @classmethod
    def open(
        cls, connection_string: str, role: Role, settings: Mapping[str, str] | None = None, readonly: int = 1
    ) -> Handle:
        """A writer handle, or a reader handle fixed to `settings` and `readonly` for good."""
        conn = chdb.connect(connection_string)  # type: ignore[no-untyped-call]  # chdb ships no annotations
        handle = cls(conn, role)
        if role is Role.READER:
            try:
                handle.apply_settings(dict(settings or {}))
                handle.run(f"SET readonly = {int(readonly)}".encode())
            except BaseException:
                handle.close()
                raise
        return handle

    def run(self, sql: bytes, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> Any:
        if fmt.lower() in WRAPPER_FORMATS:
            # chDB's Python wrapper answers these itself, through pandas/pyarrow: on nested arrays
            # the conversion faulted while holding the GIL and hung the whole process
            msg = f"Unknown output format {fmt}"
            raise ServeError(UNKNOWN_FORMAT, msg, name="UNKNOWN_FORMAT")
        try:
            return self.conn.query(sql, fmt, params=params or {})
        except Exception as exc:  # chDB raises ChdbError/RuntimeError with ClickHouse's text
            raise ServeError.from_engine(exc) from exc

    def use(self, database: str | None) -> None:
        if database is None or database == self.database:
            return
        self.run(f"USE {quote_identifier(database)}".encode())
        self.database = database

    def apply_settings(self, wanted: dict[str, str]) -> None:
        """SET what differs from what this handle has; reset what is no longer asked for."""
        for name in [n for n in self.applied if n not in wanted]:
            self.run(f"SET {name} = DEFAULT".encode())
            del self.applied[name]
        for name, value in wanted.items():
            if self.applied.get(name) == value:
                continue
            if not _SETTING_NAME.match(name):
                msg = f"Invalid setting name {name!r}"
                raise ServeError(115, msg, name="UNKNOWN_SETTING")
            self.run(f"SET {name} = {quote_literal(value)}".encode())
            self.applied[name] = value

    def forget_state(self) -> None:
        """After a client's own SET or USE in a session: re-apply everything on the next request."""
        self.applied = dict.fromkeys(self.applied, _UNKNOWN)
        self.database = None

    def close(self) -> None:
        # closing a handle the engine already dropped is harmless
        with contextlib.suppress(Exception):
            self.conn.close()
