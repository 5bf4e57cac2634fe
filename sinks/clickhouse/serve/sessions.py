"""HTTP sessions (`session_id`): a handle kept for one client between requests.

As in ClickHouse, a session keeps what the client SET and USE'd and its
temporary tables for `session_timeout` seconds after its last request; two
requests of one session at once get SESSION_IS_LOCKED, a session of another
user ACCESS_DENIED, and `session_check=1` on an unknown id SESSION_NOT_FOUND.

Sessions hold engine handles, so they are bounded, and so that nobody who can
only read can lock anyone out:
- each (user, role) keeps at most `max_per_user` sessions; the writer's
  sessions are a budget of their own, which readers cannot touch;
- all read-only sessions together are at most `max_sessions`;
- a read-only session lives at most `max_reader_timeout_s` after its last
  request, whatever `session_timeout` asked for.
A new session over a budget closes the least recently used idle session of
that budget (its next request starts afresh, or gets SESSION_NOT_FOUND with
`session_check=1`); only when every session of the budget is running a query
is it refused, with TOO_MANY_SIMULTANEOUS_QUERIES.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from sinks.clickhouse.serve.errors import (
    ACCESS_DENIED,
    SESSION_IS_LOCKED,
    SESSION_NOT_FOUND,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    ServeError,
)
from sinks.clickhouse.serve.handles import Handle, Role

DEFAULT_MAX_PER_USER: Final = 16
DEFAULT_MAX_READER_TIMEOUT_S: Final = 300.0


@dataclasses.dataclass(eq=False)
class Session:
    handle: Handle
    user: str
    timeout_s: float
    expires: float
    last_used: float
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class Sessions:
    def __init__(
        self,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        max_reader_timeout_s: float = DEFAULT_MAX_READER_TIMEOUT_S,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user
        self.max_reader_timeout_s = max_reader_timeout_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def configure(self, *, max_per_user: int, max_reader_timeout_s: float) -> None:
        """The per-user budget and the readers' longest timeout (the engine creates this object)."""
        self.max_per_user = max_per_user
        self.max_reader_timeout_s = max_reader_timeout_s

    @contextlib.contextmanager
    def borrow(
        self,
        session_id: str,
        *,
        user: str,
        role: Role,
        timeout_s: float,
        check: bool,
        open_handle: Callable[[Role], Handle],
    ) -> Iterator[Handle]:
        session = self._get_or_create(session_id, user, role, timeout_s, check, open_handle)
        try:
            yield session.handle
        finally:
            session.last_used = self._clock()
            session.expires = session.last_used + session.timeout_s
            session.lock.release()

    def _get_or_create(
        self,
        session_id: str,
        user: str,
        role: Role,
        timeout_s: float,
        check: bool,
        open_handle: Callable[[Role], Handle],
    ) -> Session:
        if role is Role.READER:
            timeout_s = min(timeout_s, self.max_reader_timeout_s)
        with self._lock:
            self._expire_locked()
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise ServeError(SESSION_NOT_FOUND, f"Session {session_id} not found")
                self._make_room_locked(user, role)
                now = self._clock()
                session = Session(open_handle(role), user, timeout_s, now + timeout_s, now)
                self._sessions[session_id] = session
            elif session.user != user or session.handle.role is not role:
                raise ServeError(ACCESS_DENIED, f"Session {session_id} belongs to another user or role")
            if not session.lock.acquire(blocking=False):
                msg = f"Session {session_id} is locked by a concurrent client"
                raise ServeError(SESSION_IS_LOCKED, msg)
            session.timeout_s = timeout_s
            return session

    def _make_room_locked(self, user: str, role: Role) -> None:
        """Below the budgets for one more session of (user, role), closing idle sessions if need be."""
        mine = [(i, s) for i, s in self._sessions.items() if s.user == user and s.handle.role is role]
        if len(mine) >= self.max_per_user:
            self._evict_locked(mine, f"Too many open sessions for user {user} ({self.max_per_user})")
        if role is Role.READER:
            readers = [(i, s) for i, s in self._sessions.items() if s.handle.role is Role.READER]
            if len(readers) >= self.max_sessions:
                self._evict_locked(readers, f"Too many open read-only sessions ({self.max_sessions})")

    def _evict_locked(self, budget: list[tuple[str, Session]], refusal: str) -> None:
        """Close the least recently used idle session of `budget`; refuse when all are busy."""
        for session_id, session in sorted(budget, key=lambda item: item[1].last_used):
            if session.lock.acquire(blocking=False):
                del self._sessions[session_id]
                session.handle.close()
                session.lock.release()
                return
        msg = f"{refusal}, all of them running a query; close idle clients or wait"
        raise ServeError(TOO_MANY_SIMULTANEOUS_QUERIES, msg)

    def _expire_locked(self) -> None:
        now = self._clock()
        for session_id, session in list(self._sessions.items()):
            if session.expires < now and session.lock.acquire(blocking=False):
                del self._sessions[session_id]
                session.handle.close()
                session.lock.release()

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.handle.close()
            self._sessions.clear()
