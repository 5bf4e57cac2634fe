"""Who may do what on the endpoint: one read-only user, one read-write user.

The read-write user exists only while a writer password is configured. A
read-only request (GET, `readonly=1`) runs as a reader whoever sends it.
Passwords are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging

from sinks.clickhouse.serve.errors import AUTHENTICATION_FAILED, ServeError
from sinks.clickhouse.serve.handles import Role
from sinks.clickhouse.serve.request import Credentials
from sinks.clickhouse.serve.settings import ServeSettings

log = logging.getLogger(__name__)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Access:
    def __init__(self, settings: ServeSettings) -> None:
        self.reader = (settings.reader_user, settings.reader_password.get_secret_value())
        writer_password = settings.writer_password
        self.writer: tuple[str, str] | None = None
        if writer_password is not None:
            self.writer = (settings.writer_user, writer_password.get_secret_value())

    @property
    def writable(self) -> bool:
        return self.writer is not None

    def role(self, credentials: Credentials, *, readonly_request: bool) -> Role:
        """The role these credentials get (raises ServeError AUTHENTICATION_FAILED)."""
        user, password = credentials.user, credentials.password
        if self.writer is not None and user == self.writer[0] and _same(password, self.writer[1]):
            return Role.READER if readonly_request else Role.WRITER
        if user == self.reader[0] and _same(password, self.reader[1]):
            return Role.READER
        log.warning("authentication failed user=%s", credentials.user)
        msg = (
            f"{credentials.user}: Authentication failed: password is incorrect, "
            "or there is no user with such name"
        )
        raise ServeError(AUTHENTICATION_FAILED, msg)
