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
