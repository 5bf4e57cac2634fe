"""Run in a fresh process by test_cluster_ddl.py: chDB takes its configuration (clusters, macros)
only when the engine starts, so the one-shard cluster cannot share a process with other tests.

Applies the cluster layout (plain MergeTree engines, no ON CLUSTER: chDB has no Keeper and no
distributed DDL queue) and the single-node schema side by side, makes the same inserts into both,
once through the Distributed input tables, and prints a JSON report.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import chdb

from sinks.clickhouse.ddl import ClusterLayout, schema_statements

CONFIG = """<clickhouse>
  <tcp_port>9000</tcp_port>
  <remote_servers><tykpulse_test><shard><replica><host>localhost</host><port>9000</port></replica></shard>
  </tykpulse_test></remote_servers>
  <macros><shard>01</shard><replica>r1</replica></macros>
</clickhouse>"""

TRAFFIC = [
    "(1795774500, 'o1', 'a1', 5, 1, 1, 0, [10, 20], [3, 2])",
    "(1795774530, 'o1', 'a1', 2, 0, 0, 1, [20], [2])",
    "(1795774600, 'o2', 'a2', 7, 2, 0, 0, [5], [7])",
]
LIMITS = ["(1795774500, 'o1', 'a1', 'RatelimitExceeded', 3, [11, 12, 11])"]


def main(config_path: str) -> None:
    conn = chdb.connect(f":memory:?config-file={config_path}")  # type: ignore[no-untyped-call]  # chdb ships no annotations
    cur = conn.cursor()

    def q(sql: str) -> list[Any]:
        cur.execute(sql)
        return list(cur.fetchall())

    layout = ClusterLayout("tykpulse_test", replicated=False, on_cluster=False)
    for statement in schema_statements("clus", layout):
        q(statement)
    for statement in schema_statements("plain"):
        q(statement)
    inserts = [
        ("traffic", TRAFFIC[:2], "t1"),
        ("traffic", TRAFFIC[2:], "t2"),
        ("rate_limit_hits", LIMITS, "t3"),
    ]
    inserts += [("traffic", TRAFFIC[:2], "t1"), ("traffic", TRAFFIC[:1], "t4")]  # a retry, then new content
    for name, rows, token in inserts:
        for table in (f"clus.{name}_in_all", f"plain.{name}_in"):
            q(
                f"INSERT INTO {table} SETTINGS insert_deduplication_token = '{token}', "
                "deduplicate_blocks_in_dependent_materialized_views = 1, distributed_foreground_insert = 1 "
                f"VALUES {', '.join(rows)}"
            )
    q(
        "INSERT INTO clus.kafka_positions (topic, partition, claim, first_offset, last_offset, seq_nodes, "
        "seq_boots, seq_last, owner, written_at) SETTINGS insert_quorum = 'auto' "
        "VALUES ('t', 0, 1, 0, 9, ['gw'], [1], [3], 'w', now64(3))"
    )
    report: dict[str, dict[str, list[Any]] | list[Any]] = {
        view: {db: q(f"SELECT * FROM {db}.{view} ORDER BY ALL") for db in ("clus", "plain")}
        for view in ("traffic_1m", "traffic_1h", "rate_limit_hits_1m")
    }
    report["positions"] = q(
        "SELECT last_offset FROM clus.kafka_positions ORDER BY claim DESC LIMIT 1 "
        "SETTINGS select_sequential_consistency = 1"
    )
    report["clusters"] = q("SELECT cluster, is_local FROM system.clusters WHERE cluster = 'tykpulse_test'")
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        f.write(CONFIG)
    main(sys.argv[1])
