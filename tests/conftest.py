"""Shared fixtures: loopback ports, ZeroMQ contexts, embedded ClickHouse, clocks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, settings

from pipelines.keys import KEY_FILE_NAME
from pipelines.wal.build import DEFAULT_WAL_DIR
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.harness.processes import free_port

pytest_plugins = [
    "tests.harness.kafka.fixtures",
    "tests.harness.redis_fixtures",
    "tests.harness.seeded",
    "tests.harness.alert_receiver",
]

# Property tests: a quick default; `make fuzz` selects the long profile.
settings.register_profile(
    "default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("TYKPULSE_HYPOTHESIS_PROFILE", "default"))

# What a command writes under its working directory when given no path of its own (the default
# write-ahead log beside a ClickHouse server, the key file of API-key digests, Faust's files): run
# from the checkout, tests that leave them to their defaults share them with each other and with
# the developer's own runs, and a log a failed test left behind is replayed into the next test's
# database. So every test runs in a directory of its own (_own_working_directory), and the session
# fails if the checkout's own places changed anyway.
_DEFAULT_PLACES = (DEFAULT_WAL_DIR, DEFAULT_WAL_DIR.parent / KEY_FILE_NAME, DEFAULT_WAL_DIR.parent / "faust")
_PLACES_KEY = pytest.StashKey[tuple[Path, dict[Path, tuple[int, ...]]]]()


def _places_state(base: Path) -> dict[Path, tuple[int, ...]]:
    state: dict[Path, tuple[int, ...]] = {}
    for place in _DEFAULT_PLACES:
        path = base / place
        entries = [path, *path.rglob("*")] if path.is_dir() else [path]
        state[place] = tuple(sorted(e.stat().st_mtime_ns for e in entries if e.exists()))
    return state


def pytest_sessionstart(session: pytest.Session) -> None:
    base = Path.cwd()
    session.config.stash[_PLACES_KEY] = (base, _places_state(base))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _PLACES_KEY not in session.config.stash:
        return
    base, before = session.config.stash[_PLACES_KEY]
    touched = [str(place) for place, state in _places_state(base).items() if state != before[place]]
    if touched:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"tests wrote to {base}'s default places {touched}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="module", autouse=True)
def _module_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For a module's own fixtures (they start before any test's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


# A fixed instant for unit tests: 2026-11-27T10:15:00Z.
T0_NS = 1_795_774_500_000_000_000


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def clickhouse(tmp_path: Path) -> ClickHouseSettings:
    """Embedded ClickHouse in this test's temp dir, with a database of its own."""
    return ClickHouseSettings(
        clickhouse_dsn=f"chdb://{tmp_path / 'clickhouse'}",
        clickhouse_database=f"t_{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def sink(clickhouse: ClickHouseSettings) -> Iterator[ClickHouseSink]:
    s = ClickHouseSink(clickhouse)
    s.setup()
    yield s
    s.close()


@pytest.fixture
def tykpulse_sink(tmp_path: Path) -> Iterator[ClickHouseSink]:
    """Embedded ClickHouse whose database is `tykpulse`, the name the shipped SQL (alert rules,
    dashboards, the analyst API) reads."""
    s = ClickHouseSink(
        ClickHouseSettings(clickhouse_dsn=f"chdb://{tmp_path / 'db'}", clickhouse_database="tykpulse")
    )
    s.setup()
    yield s
    s.close()
