"""HTTP sessions (`session_id`): a handle kept for one client between requests.

As in ClickHouse, a session keeps what the client SET and USE'd and its
temporary tables for `session_timeout` seconds after its last request; two
requests of one session at once get SESSION_IS_LOCKED, a session of another
user ACCESS_DENIED, and `session_check=1` on an unknown id SESSION_NOT_FOUND.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

from sinks.clickhouse.serve.errors import (
    ACCESS_DENIED,
    SESSION_IS_LOCKED,
    SESSION_NOT_FOUND,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    ServeError,
)
from sinks.clickhouse.serve.handles import Handle, Role


@dataclasses.dataclass(eq=False)
class Session:
    handle: Handle
    user: str
    timeout_s: float
    expires: float
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class Sessions:
    def __init__(self, max_sessions: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

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
            session.expires = self._clock() + session.timeout_s
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
        with self._lock:
            self._expire_locked()
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise ServeError(SESSION_NOT_FOUND, f"Session {session_id} not found")
                if len(self._sessions) >= self.max_sessions:
                    msg = f"Too many open sessions ({self.max_sessions}); close idle clients or wait"
                    raise ServeError(TOO_MANY_SIMULTANEOUS_QUERIES, msg)
                session = Session(open_handle(role), user, timeout_s, self._clock() + timeout_s)
                self._sessions[session_id] = session
            elif session.user != user or session.handle.role is not role:
                raise ServeError(ACCESS_DENIED, f"Session {session_id} belongs to another user or role")
            if not session.lock.acquire(blocking=False):
                msg = f"Session {session_id} is locked by a concurrent client"
                raise ServeError(SESSION_IS_LOCKED, msg)
            session.timeout_s = timeout_s
            return session

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
