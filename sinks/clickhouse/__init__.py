"""ClickHouse: the output contract, its DDL and the sink that writes partial rollups."""

from sinks.clickhouse.client import Target, connect, parse_dsn
from sinks.clickhouse.contract import DATABASE, ROLLUPS, ROLLUPS_BY_NAME, Rollup
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink, apply_schema

__all__ = [
    "DATABASE",
    "ROLLUPS",
    "ROLLUPS_BY_NAME",
    "ClickHouseSettings",
    "ClickHouseSink",
    "Rollup",
    "Target",
    "apply_schema",
    "connect",
    "parse_dsn",
]
