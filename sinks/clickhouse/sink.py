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
from clickhouse_connect.driver.exceptions import ClickHouseError

from sinks.clickhouse.client import connect, parse_dsn
from sinks.clickhouse.contract import TABLES_BY_NAME
from sinks.clickhouse.ddl import (
    ClusterLayout,
    created_view,
    insert_table,
    modified_view,
    reattach_statements,
    schema_statements,
    view_is_current,
)
from sinks.clickhouse.durable import FilesystemSync
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.errors import SinkError, SinkRejectedError, SinkUnavailableError
from sinks.redact import redact

log = logging.getLogger(__name__)

# ClickHouse's TABLE_ALREADY_EXISTS: another writer created the object first.
TABLE_ALREADY_EXISTS: Final = 57
_DEDUP_SETTINGS: Final = {"deduplicate_blocks_in_dependent_materialized_views": 1, "insert_deduplicate": 1}
# Through a Distributed table, an insert returns only once every shard has its rows (and their tokens).
_CLUSTER_SETTINGS: Final = {"distributed_foreground_insert": 1}
# A flush may hold windows of any month (a partition of the state tables each): on the Kafka path a
# receive time is the record's timestamp, which its producer sets, and 101 records a month apart made
# every attempt of their flush fail (252 TOO_MANY_PARTS, retried as a limit) and stopped the partition
# for good. A window is a DateTime, so the months there can be are bounded anyway (1970-2106).
_PARTITION_SETTINGS: Final = {"max_partitions_per_insert_block": 0}


# ClickHouse error codes that prove the rows (or their shape) are bad: retrying the same
# rows cannot succeed, and no reader can make them happen to good rows (only a change to
# the tables themselves, which needs DDL rights, could).
# Names as in ClickHouse's src/Common/ErrorCodes.cpp (errorCodeToName on the engine).
DATA_ERROR_CODES: Final = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        7,  # INCORRECT_NUMBER_OF_COLUMNS
        8,  # THERE_IS_NO_COLUMN
        9,  # SIZES_OF_COLUMNS_DOESNT_MATCH
        10,  # NOT_FOUND_COLUMN_IN_BLOCK
        16,  # NO_SUCH_COLUMN_IN_TABLE
        19,  # SIZE_OF_FIXED_STRING_DOESNT_MATCH
        20,  # NUMBER_OF_COLUMNS_DOESNT_MATCH
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        44,  # ILLEGAL_COLUMN
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
        407,  # DECIMAL_OVERFLOW
        467,  # CANNOT_PARSE_BOOL
    }
)
# The rows are fine but this user may not write: an operator must act, so say so loudly.
CONFIGURATION_ERROR_CODES: Final = frozenset(
    {
        164,  # READONLY
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
    }
)


def translate(exc: Exception, action: str, table: str = "") -> SinkError:
    """Map a driver error to SinkRejectedError (the rows are bad) or SinkUnavailableError (retry).

    Classified by evidence: only a ClickHouse error code in DATA_ERROR_CODES
    proves that the rows themselves (their values or their shape) are bad, and
    only that is a SinkRejectedError, which callers may treat as final (the
    WAL flusher sends it to the dead-letter file after repeated refusals).
    Everything else is a SinkUnavailableError, retried with the data kept:
    394 QUERY_WAS_CANCELLED (anyone allowed to run KILL QUERY can cause it),
    202 TOO_MANY_SIMULTANEOUS_QUERIES, 241 MEMORY_LIMIT_EXCEEDED,
    159 TIMEOUT_EXCEEDED, 252 TOO_MANY_PARTS, 373 SESSION_IS_LOCKED,
    60/81 UNKNOWN_TABLE/UNKNOWN_DATABASE (the schema is missing; the flusher
    applies it again), the CONFIGURATION_ERROR_CODES (logged as errors: an
    operator must fix the user or its grants), any code not listed, and
    errors without a code (network, client state). Input cut short in transit
    (33 CANNOT_READ_ALL_DATA) is not in the list: it is not proof either.
    The code, when there is one, stays on the returned error.
    """
    code = _error_code(exc)
    # the driver's text may quote the server URL it was given, credentials included
    message = f"{action} failed: {redact(exc)}"
    if code in DATA_ERROR_CODES:
        return SinkRejectedError(message, table=table, code=code)
    if code in CONFIGURATION_ERROR_CODES:
        log.error(
            "ClickHouse refuses this user (code %d): fix the user, its password or its grants; "
            "nothing is dropped, the write is retried. %s",
            code,
            message,
        )
    return SinkUnavailableError(message, table=table, code=code)


def _error_code(exc: Exception) -> int | None:
    """The ClickHouse error code the driver put on `exc` (None for transport and client errors)."""
    if not isinstance(exc, ClickHouseError):
        # Only the driver's errors carry ClickHouse codes; an OSError's `code`, if any, is
        # something else (urllib's HTTPError has the HTTP status: 407 is not DECIMAL_OVERFLOW).
        return None
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


class ClickHouseSink:
    def __init__(self, settings: ClickHouseSettings) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self.target = parse_dsn(settings.clickhouse_dsn)
        self.layout = ClusterLayout(settings.clickhouse_cluster) if settings.clickhouse_cluster else None
        self._insert_settings = {
            **_DEDUP_SETTINGS,
            **_PARTITION_SETTINGS,
            **(_CLUSTER_SETTINGS if self.layout else {}),
        }
        self._client: Any = None
        self._sync: FilesystemSync | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def setup(self) -> None:
        """Open the connection and apply the schema (idempotent)."""
        apply_schema(self.client, self.database, self.layout)
        if self.target.embedded_path is not None and self._sync is None:
            self._sync = FilesystemSync(self.target.embedded_path)
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

    def make_durable(self) -> None:
        """Make every insert so far survive power loss: the embedded engine's filesystem is synced
        (ClickHouse fsyncs neither parts nor tokens by default, durable.py); a server keeps its own.
        Raises OSError when the disk failed to take what was written."""
        if self._sync is not None:
            self._sync.sync()

    def query_rows(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return list(self.client.query(sql).result_rows)
        except (ClickHouseError, OSError) as exc:
            raise translate(exc, "query") from exc

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        if self._client is not None:
            self._client.close()
            self._client = None


def apply_schema(client: Any, database: str, layout: ClusterLayout | None = None) -> float:
    """Create or update every object of the output contract; returns seconds taken.

    A view's query is replaced (upgrade) only when it lacks a measure. On a
    single server, a view this call creates or upgrades is attached again right
    after that statement (see ddl.reattach_statements: otherwise a flush retried
    after the server restarts can land twice in it). Only the call that really
    creates a view does so (several workers may start on a fresh database at
    once), and views already current are left alone, so writers running
    meanwhile never miss a view. A cluster's views are not attached again (ON
    CLUSTER DDL runs on every node asynchronously; docs/scaling.md).
    """
    started = time.perf_counter()
    views = _view_queries(client, database)
    for statement in schema_statements(database, layout):
        upgraded = modified_view(statement)
        if upgraded is not None and (
            upgraded not in views or view_is_current(upgraded, views[upgraded], database)
        ):
            continue  # created just now with its current query, or upgraded before
        created = created_view(statement)
        if layout is None and created is not None and created not in views:
            if _create_view(client, statement):
                reattach(client, created)
            continue
        _run_schema_statements(client, [statement])
        if layout is None and upgraded is not None:
            reattach(client, upgraded)
    return time.perf_counter() - started


def _create_view(client: Any, statement: str) -> bool:
    """Run a view's CREATE as a plain CREATE: False if another writer created the view meanwhile."""
    try:
        client.command(statement.replace(" IF NOT EXISTS ", " ", 1))
    except (ClickHouseError, OSError) as exc:
        if _error_code(exc) == TABLE_ALREADY_EXISTS:
            return False
        first_line = statement.splitlines()[0]
        raise translate(exc, f"schema statement {first_line!r}") from exc
    return True


# ATTACH of a view just detached fails while a query still holds the detached table (code 57, "it
# was detached but still used by some query. Retry later."): another writer's schema apply reading
# system.tables, an insert through the view. Such queries are short; the ATTACH waits them out.
REATTACH_WAIT_S: Final = 30.0


def reattach(client: Any, view: str) -> None:
    """Detach and attach `view` again (ddl.reattach_statements), the ATTACH retried while the
    detached table is still in use; the view is never left detached by a transient refusal."""
    detach, attach = reattach_statements([view])
    _run_schema_statements(client, [detach])
    deadline, pause = time.monotonic() + REATTACH_WAIT_S, 0.02
    while True:
        try:
            client.command(attach)
            return
        except (ClickHouseError, OSError) as exc:
            in_use = _error_code(exc) == TABLE_ALREADY_EXISTS and "still used" in str(exc)
            if not in_use or time.monotonic() >= deadline:
                raise translate(exc, f"schema statement {attach!r}") from exc
            log.info("view still in use by a query, attaching it again shortly view=%s", view)
        time.sleep(pause)
        pause = min(2 * pause, 0.5)


def _run_schema_statements(client: Any, statements: list[str]) -> None:
    for statement in statements:
        try:
            client.command(statement)
        except (ClickHouseError, OSError) as exc:
            first_line = statement.splitlines()[0]
            raise translate(exc, f"schema statement {first_line!r}") from exc


def _view_queries(client: Any, database: str) -> dict[str, str]:
    """The materialized views `database` holds now: qualified name -> query (as_select)."""
    sql = (
        "SELECT concat(database, '.', name), as_select FROM system.tables "
        "WHERE database = {database:String} AND engine = 'MaterializedView'"
    )
    try:
        rows = client.query(sql, parameters={"database": database}).result_rows
    except (ClickHouseError, OSError) as exc:
        raise translate(exc, "listing the materialized views") from exc
    return {name: query for name, query in rows}
