"""The ClickHouse sink: writes partial rollups, one insert per rollup per flush.

Lifecycle (as in quix-streams' sinks): setup() once, write() per flush, close().
Each insert carries an insert_deduplication_token; ClickHouse keeps the last
tokens per state table, so writing the same flush twice (a retry after a
timeout, a replay after a crash) lands once. Callers choose tokens that
identify the content of a flush, never reusing one for different content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import pyarrow as pa
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from sinks.clickhouse.client import connect, parse_dsn
from sinks.clickhouse.contract import TABLES_BY_NAME
from sinks.clickhouse.ddl import ClusterLayout, insert_table, schema_statements
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.errors import SinkError, SinkRejectedError, SinkUnavailableError

log = logging.getLogger(__name__)

_DEDUP_SETTINGS: Final = {"deduplicate_blocks_in_dependent_materialized_views": 1, "insert_deduplicate": 1}
# Through a Distributed table, an insert returns only once every shard has its rows (and their tokens).
_CLUSTER_SETTINGS: Final = {"distributed_foreground_insert": 1}


def translate(exc: Exception, action: str, table: str = "") -> SinkError:
    """Map a driver error to SinkUnavailableError (retry) or SinkRejectedError (do not)."""
    code = getattr(exc, "code", None)
    message = f"{action} failed: {exc}"
    if isinstance(exc, OperationalError | OSError):
        return SinkUnavailableError(message, table=table, code=code)
    return SinkRejectedError(message, table=table, code=code)


class ClickHouseSink:
    def __init__(self, settings: ClickHouseSettings) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self.target = parse_dsn(settings.clickhouse_dsn)
        self.layout = ClusterLayout(settings.clickhouse_cluster) if settings.clickhouse_cluster else None
        self._insert_settings = {**_DEDUP_SETTINGS, **(_CLUSTER_SETTINGS if self.layout else {})}
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def setup(self) -> None:
        """Open the connection and apply the schema (idempotent)."""
        apply_schema(self.client, self.database, self.layout)
        log.info("sink ready target=%s database=%s", self.target.describe(), self.database)

    def write(self, partials: Mapping[str, pa.Table], token: str) -> int:
        """Insert every non-empty partial rollup; returns the rows written."""
        rows = 0
        for name, table in partials.items():
            if table.num_rows == 0:
                continue
            target = f"{self.database}.{insert_table(TABLES_BY_NAME[name], self.layout)}"
            settings = {**self._insert_settings, "insert_deduplication_token": f"{token}/{name}"}
            try:
                self.client.insert_arrow(target, table, settings=settings)
            except (ClickHouseError, OSError) as exc:
                raise translate(exc, f"insert into {target}", target) from exc
            rows += table.num_rows
        return rows

    def query_rows(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return list(self.client.query(sql).result_rows)
        except (ClickHouseError, OSError) as exc:
            raise translate(exc, "query") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def apply_schema(client: Any, database: str, layout: ClusterLayout | None = None) -> float:
    """Create or update every object of the output contract; returns seconds taken."""
    started = time.perf_counter()
    for statement in schema_statements(database, layout):
        try:
            client.command(statement)
        except (ClickHouseError, OSError) as exc:
            first_line = statement.splitlines()[0]
            raise translate(exc, f"schema statement {first_line!r}") from exc
    return time.perf_counter() - started
