"""pytest fixtures for a real redis-server.

Use from a test module with ``from tests.harness.redis_fixtures import redis_server``, or
register once for the whole suite with ``pytest_plugins = ["tests.harness.redis_fixtures"]`` in
the top-level ``conftest.py``. The fixtures never skip: if redis-server cannot start, the test
errors with the reason and the server's log tail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.redis import RedisServer, RedisServerError

__all__ = ["redis_server"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session (127.0.0.1, free port, no persistence)."""
    server = RedisServer()
    try:
        server.start()
    except RedisServerError as exc:
        pytest.fail(f"redis_server fixture: could not start redis-server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
