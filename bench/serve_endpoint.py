"""How fast the ClickHouse HTTP endpoint is next to embedded access, on this machine.

    .venv/bin/python bench/serve_endpoint.py [--rows 5000] [--inserts 200] [--queries 500]

Measures, against a fresh temporary database: queries per second (a GROUP BY
over the inserted rows), the round trip of SELECT 1, and insert_arrow throughput with a
deduplication token per insert, once embedded (clickhouse-connect's chdb
client, in process) and once over HTTP to the endpoint in the same process;
then the same queries as an anonymous reader, whose statements pass the
reader gate (two more engine calls each: formatQuery and EXPLAIN AST).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import clickhouse_connect
import pyarrow as pa
from pydantic import SecretStr

from sinks.clickhouse.serve import ClickHouseHttpServer, ServeSettings

TABLE = (
    "CREATE TABLE IF NOT EXISTS b.t (x UInt64, api LowCardinality(String), n UInt64) "
    "ENGINE = MergeTree ORDER BY x"
)
PASSWORD = "bench-only"  # noqa: S105 - a throwaway endpoint on loopback for the run


def table(rows: int, rng: random.Random) -> pa.Table:
    return pa.table(
        {
            "x": pa.array([rng.randrange(10**12) for _ in range(rows)], pa.uint64()),
            "api": [f"api-{rng.randrange(200):03d}" for _ in range(rows)],
            "n": pa.array([rng.randrange(1000) for _ in range(rows)], pa.uint64()),
        }
    )


def run(client: Any, label: str, rows: int, inserts: int, queries: int) -> None:
    client.command("CREATE DATABASE IF NOT EXISTS b")
    client.command("DROP TABLE IF EXISTS b.t")
    client.command(TABLE)
    rng = random.Random(1)
    tables = [table(rows, rng) for _ in range(inserts)]
    started = time.perf_counter()
    for i, t in enumerate(tables):
        client.insert_arrow("b.t", t, settings={"insert_deduplication_token": f"{label}-{i}"})
    insert_s = time.perf_counter() - started
    print(
        f"{label:9s} inserts: {inserts / insert_s:7.1f}/s ({inserts * rows / insert_s:10,.0f} rows/s)   "
        + read(client, queries)
    )


def read(client: Any, queries: int) -> str:
    """Time the GROUP BY and SELECT 1 loops; returns their summary."""
    started = time.perf_counter()
    for _ in range(queries):
        assert client.query("SELECT api, sum(n) FROM b.t GROUP BY api ORDER BY api LIMIT 10").result_rows
    query_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(queries):
        assert client.command("SELECT 1") == 1
    tiny_ms = 1000 * (time.perf_counter() - started) / queries
    return (
        f"queries: {queries / query_s:7.1f}/s ({1000 * query_s / queries:.2f} ms each)   "
        f"SELECT 1: {tiny_ms:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--inserts", type=int, default=200)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db"
        embedded = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        run(embedded, "embedded", args.rows, args.inserts, args.queries)
        embedded.close()
        settings = ServeSettings(serve_listen="127.0.0.1:0", writer_password=SecretStr(PASSWORD))
        with ClickHouseHttpServer(path, settings) as server:
            host, port = server.address
            http = clickhouse_connect.get_client(host=host, port=port, username="tykpulse", password=PASSWORD)
            run(http, "http", args.rows, args.inserts, args.queries)
            http.close()
            # an anonymous reader: every statement goes through the reader gate
            reader = clickhouse_connect.get_client(host=host, port=port)
            print(f"{'reader':9s} {'':48s}" + read(reader, args.queries))
            reader.close()


if __name__ == "__main__":
    main()
