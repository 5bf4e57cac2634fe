"""pytest fixtures for the real Kafka broker.

Register from ``tests/conftest.py``::

    pytest_plugins = ["tests.harness.kafka.fixtures"]

``kafka_broker`` (session scope) starts one single-node KRaft broker for the whole run and
stops it at the end. It never skips: if java/mvn are missing, the jars cannot be fetched
or the broker does not come up, every test that uses it errors with the reason and the
broker log tail. ``kafka_topic`` gives each test its own fresh 4-partition topic.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.harness.kafka.broker import KafkaBroker, KafkaHarnessError


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker()
    failure: str | None = None
    try:
        broker.start()
    except KafkaHarnessError as exc:
        failure = str(exc)
    if failure is not None:  # outside the except block: report the reason once, unchained
        pytest.fail(f"Kafka broker for tests could not start:\n{failure}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_topic(kafka_broker: KafkaBroker, request: pytest.FixtureRequest) -> str:
    """A new topic with 4 partitions, named after the test (topics are not deleted)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:180]
    name = f"{base}-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(name, partitions=4)
    return name
