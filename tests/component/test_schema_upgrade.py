"""A database created before a column was added is upgraded in place by the next schema apply."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from sinks.clickhouse import ddl
from sinks.clickhouse.contract import INGEST_HEALTH, Rollup
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.conftest import T0_NS
from tests.helpers import analytics, message
from tests.hostile import garbage_with_valid_envelopes

pytestmark = pytest.mark.component


def _without_added(rollup: Rollup) -> Rollup:
    """The rollup as an older version declared it: no `added` inputs, measures or outputs."""
    added = {c.name for c in rollup.inputs if c.added}
    return dataclasses.replace(
        rollup,
        inputs=tuple(c for c in rollup.inputs if c.name not in added),
        measures=tuple(m for m in rollup.measures if m.name not in added),
        outputs=tuple(o for o in rollup.outputs if o.name not in added),
    )


def test_an_old_ingest_health_gains_rejected_messages_and_keeps_its_rows(
    clickhouse: ClickHouseSettings,
) -> None:
    sink = ClickHouseSink(clickhouse)
    db = clickhouse.clickhouse_database
    old = _without_added(INGEST_HEALTH)
    client: Any = sink.client
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    for statement in ddl._table_statements(old, ["1m", "1h"], db, None):
        client.command(statement)
    client.command(
        f"INSERT INTO {db}.ingest_health_in (window_start, node_id, messages) VALUES (0, 'old', 3)"
    )
    try:
        sink.setup()  # the new version starts on the old database
        sink.setup()  # and again: every upgrade statement is idempotent
        ingestor = Ingestor(clock=lambda: T0_NS)
        ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)], node="n", boot=7, seq=0))
        for frames in garbage_with_valid_envelopes(T0_NS, "n", 7, seq=1):
            ingestor.ingest(frames)
        sink.write({"ingest_health": compute(ingestor.take())["ingest_health"]}, token="t1")
        rows = sink.query_rows(
            f"SELECT node_id, messages, lost_messages, rejected_messages FROM {db}.ingest_health_1h "
            "ORDER BY node_id"
        )
    finally:
        sink.close()
    assert rows == [("n", 1, 0, 4), ("old", 3, 0, 0)]
