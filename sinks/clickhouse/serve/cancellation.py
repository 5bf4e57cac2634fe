"""Cancelling a reader's query in the engine, by the server only.

chDB's blocking query call takes no query_id and offers no way to interrupt
it, but the engine lists a running query in `system.processes` with the text
it was given and `KILL QUERY` stops it. So every reader query runs behind a
comment naming a ticket the server made up (`/* tykpulse-reader-query <hex> */`),
and cancelling a ticket kills the queries whose text starts with that comment.

Nobody but the server can aim such a KILL: readers never run KILL (the gate
refuses it), the ticket is a fresh random id the client never sees, the
comment goes in front of the canonical statement (formatQuery has removed
every comment the client wrote, so no client text can start with it), and the
writer's statements carry no ticket, so a reader cannot get them cancelled.
"""

from __future__ import annotations

import threading
import uuid
from typing import Final

from sinks.clickhouse.serve.errors import QUERY_WAS_CANCELLED, ServeError
from sinks.clickhouse.serve.handles import quote_literal

_MARKER_PREFIX: Final = "/* tykpulse-reader-query "


class Ticket:
    """One reader query the server may cancel."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.marker = f"{_MARKER_PREFIX}{self.id} */ ".encode()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self) -> None:
        """Raise QUERY_WAS_CANCELLED once cancelled: a query not started yet is never started."""
        if self.cancelled:
            msg = "Query was cancelled: its client closed the connection"
            raise ServeError(QUERY_WAS_CANCELLED, msg)

    def kill_statement(self) -> bytes:
        """KILL for the queries run under this ticket (ASYNC: the caller waits for the query itself)."""
        marker = quote_literal(self.marker.decode())
        return f"KILL QUERY WHERE startsWith(query, {marker}) ASYNC".encode()
