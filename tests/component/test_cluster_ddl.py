"""The cluster layout of the schema: it parses on the real engine, and behaves like one node.

Replicated engines need Keeper and ON CLUSTER needs the distributed DDL queue, neither of which
the embedded engine has: the replicated statements are checked by the parser (formatQuery), and the
layout's behaviour (Distributed inputs and reads, tokens through the Distributed table, views over
the shards) on a one-shard cluster with plain engines (docs/scaling.md says what is not covered).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sinks.clickhouse.contract import GRAINS, REGISTRIES, ROLLUPS
from sinks.clickhouse.ddl import ClusterLayout, schema_statements
from sinks.clickhouse.sink import ClickHouseSink

pytestmark = pytest.mark.component
LAYOUT = ClusterLayout("prod")


def test_every_cluster_statement_parses(sink: ClickHouseSink) -> None:
    statements = schema_statements("tykpulse", LAYOUT)
    for statement in statements:
        formatted = sink.client.query("SELECT formatQuery(%(s)s)", parameters={"s": statement}).result_rows[
            0
        ][0]
        assert "ON CLUSTER prod" in formatted, formatted
    # a Distributed twin for every input and state table: rollups have one state per grain,
    # registries (publishers) one
    twins = len(ROLLUPS) * (1 + len(GRAINS)) + len(REGISTRIES) * 2
    # and the upgrade of a table with added columns alters each twin too
    upgraded = sum(1 + len(GRAINS) for r in ROLLUPS if any(c.added for c in r.inputs))
    upgraded += sum(2 for r in REGISTRIES if any(c.added for c in r.inputs))
    assert len(statements) == len(schema_statements("tykpulse")) + twins + upgraded


def test_state_tables_are_replicated_with_a_week_of_tokens() -> None:
    creates = [s for s in schema_statements("tykpulse", LAYOUT) if s.startswith("CREATE TABLE")]
    states = [s for s in creates if "_state ON CLUSTER" in s]
    assert len(states) == len(ROLLUPS) * len(GRAINS) + len(REGISTRIES)
    for statement in states:
        assert "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/tykpulse/" in statement
        assert "replicated_deduplication_window = 10000" in statement
        assert "replicated_deduplication_window_seconds = 604800" in statement
    positions = next(s for s in creates if "kafka_positions" in s)
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/all/tykpulse/kafka_positions'" in positions
    # a positions table made before the runs were kept gets their columns on every replica
    upgrade = schema_statements("tykpulse", LAYOUT)[-1]
    assert upgrade.startswith("ALTER TABLE tykpulse.kafka_positions ON CLUSTER prod")
    assert "ADD COLUMN IF NOT EXISTS seq_run_lows" in upgrade


def test_writers_insert_through_distributed_tables_sharded_by_keys() -> None:
    statements = schema_statements("tykpulse", LAYOUT)
    traffic_in_all = next(s for s in statements if "traffic_in_all" in s)
    assert (
        "Distributed(prod, tykpulse, traffic_in, cityHash64(window_start, org_id, api_id))" in traffic_in_all
    )
    view = next(s for s in statements if s.startswith("CREATE OR REPLACE VIEW tykpulse.traffic_1m "))
    assert "FROM tykpulse.traffic_1m_state_all" in view


def test_cluster_layout_counts_like_one_node(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.component.cluster_semantics", str(tmp_path / "config.xml")],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["clusters"] == [["tykpulse_test", 1]]
    for view in ("traffic_1m", "traffic_1h", "rate_limit_hits_1m"):
        assert report[view]["clus"] == report[view]["plain"], view
    requests = {(row[1], row[2]): row[3] for row in report["traffic_1h"]["clus"]}
    assert requests == {("o1", "a1"): 5 + 2 + 5, ("o2", "a2"): 7}  # the retried t1 landed once
    assert report["rate_limit_hits_1m"]["clus"][0][4:] == [3, 2]  # hits, distinct keys
    assert report["positions"] == [[9]]
