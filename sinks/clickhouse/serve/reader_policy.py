"""What a reader of the served database may do: an allow-list over ClickHouse's own syntax tree.

A reader reads. Admitted:

- statements: SELECT (with WITH, UNION, INTERSECT/EXCEPT, sub-queries), SHOW TABLES /
  DATABASES / COLUMNS / CREATE ..., DESCRIBE, EXISTS, and EXPLAIN of any of these;
- tables: any table of a user database (the rollups), `information_schema`, and the
  `system` tables that clients, BI tools and the notebooks read (`READABLE_SYSTEM_TABLES`);
  not `default`: chDB's `default` is an Overlay whose table names are also paths of files
  (`default.`/etc/passwd``, or a name relative to the working directory). A reader's
  current database is never `default` either but `READER_HOME`, an empty Memory database, so
  that an unqualified name is a CTE, or nothing;
- table functions: `ALLOWED_TABLE_FUNCTIONS` only (no file, url, remote, s3, ...);
- scalar functions: all but those that reach the host (`HOST_FUNCTIONS`: `file()`, ...);
- settings: URL parameters in `READER_SETTINGS`, and limits that may only be lowered
  (`ReaderLimits`); a SETTINGS clause or SET is refused (send URL parameters instead).

Refused, each with ClickHouse's ACCESS_DENIED (497) or READONLY (164): INTO OUTFILE,
KILL, SYSTEM, SET, USE, INSERT, DDL, SHOW PROCESSLIST/GRANTS/USERS and whatever else
is not named above. The engine is the second wall: reader handles run with `readonly=1`
and the limits applied before it (see handles.py).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Final, NoReturn

from sinks.clickhouse.serve.errors import ACCESS_DENIED, READONLY, SETTING_CONSTRAINT_VIOLATION, ServeError
from sinks.clickhouse.serve.syntax_tree import Node

SYSTEM_DATABASE: Final = "system"
# chDB's default database: an Overlay of Atomic and Filesystem (the working directory, any path)
OVERLAY_DATABASE: Final = "default"
# A reader's current database when it asks for none or for `default` (created by the engine)
READER_HOME: Final = "tykpulse_readers"

ALLOWED_STATEMENTS: Final = frozenset(
    {
        "SelectWithUnionQuery",
        "SelectIntersectExceptQuery",
        "ShowTables",  # also SHOW DATABASES, SETTINGS, CLUSTERS... only those in SHOW_TABLES_KINDS
        "ShowColumns",
        "ShowCreateTableQuery",
        "ShowCreateViewQuery",
        "ShowCreateDatabaseQuery",
        "DescribeQuery",
        "ExistsTableQuery",
        "ExistsViewQuery",
        "ExistsDatabaseQuery",
        "ShowFunctions",
        "ShowSetting",
        "ShowEngineQuery",
        "Explain",
    }
)

# refused like ClickHouse refuses them for a read-only user (READONLY rather than ACCESS_DENIED)
_WRITE_STATEMENTS: Final = (
    "Insert",
    "Create",
    "Drop",
    "Alter",
    "Rename",
    "Optimize",
    "Delete",
    "Update",
    "Undrop",
    "Truncate",
    "Attach",
    "Detach",
)

ALLOWED_TABLE_FUNCTIONS: Final = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generateSeries", "generate_series", "values", "view"}
)

# Scalar functions that read the host's files, logs or identity, write to them, or call out.
HOST_FUNCTIONS: Final = frozenset(
    name.lower()
    for name in (
        "file",
        "catboostEvaluate",
        "logTrace",
        "generateSerialID",
        "addressToLine",
        "addressToLineWithInlines",
        "addressToSymbol",
        "demangle",
        "getServerSetting",
        "getClientHTTPHeader",
        "globalVariable",
        "filesystemAvailable",
        "filesystemCapacity",
        "filesystemUnreserved",
        # tell a reader which host, kernel and build it runs on: nothing a rollup reader needs
        "hostName",
        "FQDN",
        "fullHostName",
        "displayName",
        "getOSKernelVersion",
        "buildId",
        "getMacro",
        "chdb",
        # name a table in a string, which the syntax tree does not show as a table
        "hasColumnInTable",
        "joinGet",
        "joinGetOrNull",
    )
)

# What BI tools, clickhouse-connect, Grafana's plugin and the notebooks read from `system`.
READABLE_SYSTEM_TABLES: Final = frozenset(
    {
        "one",
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "databases",
        "tables",
        "columns",
        "parts",
        "parts_columns",
        "functions",
        "table_functions",
        "table_engines",
        "settings",
        "formats",
        "data_type_families",
        "aggregate_function_combinators",
        "collations",
        "time_zones",
        "build_options",
        "contributors",
        "clusters",
        "macros",
        "keywords",
    }
)
OPEN_DATABASES: Final = frozenset({"information_schema", "INFORMATION_SCHEMA"})

# `x IN table` reads the table named on the right.
_IN_FUNCTIONS: Final = frozenset(
    {
        "in",
        "notIn",
        "nullIn",
        "notNullIn",
        "inIgnoreSet",
        "notInIgnoreSet",
        "nullInIgnoreSet",
        "notNullInIgnoreSet",
        "globalIn",
        "globalNotIn",
        "globalNullIn",
        "globalNotNullIn",
        "globalInIgnoreSet",
        "globalNotInIgnoreSet",
        "globalNullInIgnoreSet",
        "globalNotNullInIgnoreSet",
    }
)

# The syntax tree shows every SHOW of a system table as `ShowTables`; the canonical text tells which.
# Allowed: those reading only what READABLE_SYSTEM_TABLES allows (tables, databases, settings,
# clusters); not SHOW MERGES, SHOW FILESYSTEM CACHES, SHOW DICTIONARIES...
SHOW_TABLES_KINDS: Final = frozenset(
    {"TABLES", "DATABASES", "SETTINGS", "CHANGED SETTINGS", "CLUSTERS", "CLUSTER"}
)
_SHOW_KIND: Final = re.compile(
    r"SHOW\s+(?:FULL\s+)?(?:TEMPORARY\s+)?(CHANGED\s+SETTINGS|FILESYSTEM\s+CACHES|[A-Z]+)\b"
)

# URL parameters a reader may pass as settings (besides the limits below).
READER_SETTINGS: Final = frozenset(
    {
        "date_time_output_format",
        "date_time_input_format",
        "cast_string_to_dynamic_use_inference",
        "session_timezone",
        "extremes",
        "join_use_nulls",
        "joined_subquery_requires_alias",
        "aggregate_functions_null_for_empty",
        "prefer_column_name_to_alias",
        "union_default_mode",
        "enable_analyzer",
        "allow_experimental_analyzer",
        "cast_keep_nullable",
        "count_distinct_implementation",
        "max_block_size",
        "final",
        "log_comment",
        "format_csv_delimiter",
        "format_tsv_null_representation",
        "format_csv_null_representation",
        "result_overflow_mode",
        "timeout_overflow_mode",
        "read_overflow_mode",
        "totals_mode",
    }
)
# output_format_* settings shape the response; these two write files instead.
_OUTPUT_FORMAT_PREFIX: Final = "output_format_"
_FILE_WRITING_SETTINGS: Final = frozenset({"output_format_schema", "output_format_avro_rows_in_file"})
_OVERFLOW_MODES: Final = frozenset({"throw", "break"})
# Output formats whose size no reader limit bounds: Pretty* pads every cell of a column to its widest
# value and is rendered outside the query's memory tracker (max_memory_usage, max_result_bytes of
# blocks and the in-flight budget all miss it): 47 KB of SELECT made a 1.5 GB answer, ~4 GB RSS.
UNBOUNDED_FORMAT_PREFIX: Final = "pretty"


# Settings every reader query runs with and no reader may change. Hyperscan (multiMatchAny,
# multiFuzzyMatchAny...) compiles its patterns before any row is read, and that compilation looks at
# neither max_execution_time nor a KILL: one 23 KB query of 1,000 patterns ran 140-200 s at a full core,
# cancelled for the last 20 of them. match(), REGEXP and LIKE (RE2) stay.
READER_FIXED_SETTINGS: Final = {"allow_hyperscan": "0"}


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderLimits:
    """Per-query limits of every reader query; a reader may ask for lower ones, never higher."""

    max_execution_time: int = 60
    max_memory_usage: int = 1 << 30
    max_result_rows: int = 10_000_000
    max_result_bytes: int = 256 << 20
    max_threads: int = 4

    def as_settings(self) -> dict[str, str]:
        return {field.name: str(getattr(self, field.name)) for field in dataclasses.fields(self)}


def _refuse(what: str) -> NoReturn:
    raise ServeError(ACCESS_DENIED, f"{what} is not allowed for read-only users of tykpulse's endpoint")


def _refuse_settings() -> NoReturn:
    msg = (
        "Cannot modify settings in a statement in readonly mode; "
        "send the settings readers may change as URL parameters"
    )
    raise ServeError(READONLY, msg)


def reader_settings(requested: Mapping[str, str], limits: ReaderLimits) -> dict[str, str]:
    """The settings a reader handle runs with: the limits, lowered where asked, allowed settings and
    READER_FIXED_SETTINGS.

    Raises ServeError READONLY for a setting readers may not change and
    SETTING_CONSTRAINT_VIOLATION for a limit above the server's.
    """
    effective = limits.as_settings()
    for name, value in requested.items():
        if name in effective:
            effective[name] = _lowered(name, value, int(effective[name]))
        elif _settable(name):
            if name.endswith("_overflow_mode") and value not in _OVERFLOW_MODES:
                msg = f"Setting {name} must be one of {sorted(_OVERFLOW_MODES)}, got {value!r}"
                raise ServeError(SETTING_CONSTRAINT_VIOLATION, msg)
            effective[name] = value
        else:
            msg = f"Cannot modify '{name}' setting in readonly mode (tykpulse's reader allow-list)"
            raise ServeError(READONLY, msg)
    return effective | READER_FIXED_SETTINGS


def check_format(fmt: str | None) -> None:
    """Refuse an output format whose size the reader limits do not bound (raises ServeError ACCESS_DENIED)."""
    if fmt is not None and fmt.lower().startswith(UNBOUNDED_FORMAT_PREFIX):
        _refuse(f"Format {fmt} (its output is not bounded by the result limits; use TSV, JSON or Native)")


def _settable(name: str) -> bool:
    if name in READER_SETTINGS:
        return True
    return name.startswith(_OUTPUT_FORMAT_PREFIX) and name not in _FILE_WRITING_SETTINGS


def _lowered(name: str, value: str, ceiling: int) -> str:
    try:
        wanted = int(value)
    except ValueError:
        msg = f"Setting {name} must be a whole number, got {value!r}"
        raise ServeError(SETTING_CONSTRAINT_VIOLATION, msg) from None
    if not 0 < wanted <= ceiling:
        msg = f"Setting {name} shouldn't be greater than {ceiling} or unlimited (0) for readers, got {value}"
        raise ServeError(SETTING_CONSTRAINT_VIOLATION, msg)
    return str(wanted)


def reader_database(requested: str | None) -> str:
    """The current database a reader's statement is checked and run in."""
    return READER_HOME if requested in (None, OVERLAY_DATABASE) else requested


def check_statement(root: Node, current_database: str, canonical: str | None = None) -> None:
    """Refuse anything in the tree a reader may not do (raises ServeError ACCESS_DENIED).

    `canonical` is the statement's canonical text (formatQuery), needed to tell SHOW statements apart.
    """
    _check_root(root)
    if any(node.kind == "ShowTables" for node in root.walk()):
        _check_show(canonical or "")
    if root.kind == "ShowColumns":
        _check_show_columns(canonical or "", current_database)
    for node in root.walk():
        if node.kind == "Set":
            _refuse_settings()
        elif node.kind == "Function":
            _check_function(node)
    for database, table in table_references(root, current_database):
        _check_table(database, table)


def reads_only_settings(root: Node, current_database: str) -> bool:
    """Whether a checked statement reads `system.settings` and nothing else.

    Such a statement runs on a handle with `readonly = 2`, so that clients
    (clickhouse-connect reads `system.settings` when it connects) see which
    settings they may send instead of every setting marked read-only. The tables
    are counted exactly as the gate finds them (the right side of IN included:
    `... FROM system.settings WHERE x IN `/path`` read a file with readonly = 2).
    """
    tables = set(table_references(root, current_database))
    table_functions = [node for node in root.walk() if node.kind == "Function" and _in_from(node)]
    return root.kind == "SelectWithUnionQuery" and tables == {("system", "settings")} and not table_functions


# Statements whose table is printed as Identifier children: `db` `table`, or `table` alone.
_NAMED_TABLE_STATEMENTS: Final = frozenset(
    {"ExistsTableQuery", "ExistsViewQuery", "ShowCreateTableQuery", "ShowCreateViewQuery"}
)


def table_references(root: Node, current_database: str) -> list[tuple[str, str]]:
    """Every (database, table) the statement names: FROM and JOIN, DESCRIBE, the right side
    of IN, EXISTS and SHOW CREATE (SHOW COLUMNS prints none: see _check_show_columns)."""
    found = []
    for node in root.walk():
        if node.kind == "TableIdentifier":
            found.append(_qualified(node.name, current_database))
        elif node.kind in _NAMED_TABLE_STATEMENTS:
            names = [child.name for child in node.children if child.kind == "Identifier"]
            if names:
                found.append(_qualified(".".join(names[-2:]), current_database))
        elif node.kind == "Function" and node.first_word in _IN_FUNCTIONS and node.children:
            arguments = node.children[0].children
            if len(arguments) == 2 and arguments[1].kind == "Identifier":
                found.append(_qualified(arguments[1].name, current_database))
    return found


def _check_function(node: Node) -> None:
    name = node.first_word
    if _in_from(node):
        if name not in ALLOWED_TABLE_FUNCTIONS:
            _refuse(f"Table function {name}")
    elif name.lower() in HOST_FUNCTIONS:
        _refuse(f"Function {name}")


def _in_from(node: Node) -> bool:
    return node.parent is not None and node.parent.kind == "TableExpression"


def _qualified(name: str, current_database: str) -> tuple[str, str]:
    database, dot, table = name.partition(".")
    return (database, table) if dot else (current_database, name)


def _check_root(root: Node) -> None:
    if root.kind == "Set":
        _refuse_settings()
    if root.kind.startswith(_WRITE_STATEMENTS):
        msg = f"Cannot execute query in readonly mode ({root.kind})"
        raise ServeError(READONLY, msg)
    if root.kind not in ALLOWED_STATEMENTS:
        _refuse(f"{root.kind} ({root.name})" if root.name else root.kind)
    # a query with output keeps INTO OUTFILE as a literal child of the statement itself
    if any(child.kind == "Literal" for child in root.children):
        _refuse("INTO OUTFILE")
    if root.kind == "Explain":
        inner = [child for child in root.children if child.kind != "Set"]
        if len(inner) != 1:
            _refuse("this EXPLAIN")
        _check_root(inner[0])


# formatQuery's SHOW COLUMNS: the table, optionally qualified, then optionally FROM/IN its database
_SHOW_COLUMNS: Final = re.compile(
    r"SHOW\s+(?:(?:FULL|EXTENDED)\s+)*COLUMNS\s+(?:FROM|IN)\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)"
    r"(?:\s+(?:FROM|IN)\s+(?P<database>[A-Za-z_][A-Za-z0-9_]*))?(?=\s|$)"
)


def _check_show_columns(canonical: str, current_database: str) -> None:
    """SHOW COLUMNS prints no table in its syntax tree: read it from the canonical text, where a
    name that needs quoting (a path) is quoted, so it does not match and is refused."""
    match = _SHOW_COLUMNS.match(canonical.strip())
    if match is None:
        _refuse("SHOW COLUMNS of this table")
    name, database = match.group("name"), match.group("database")
    _check_table(*_qualified(name, database or current_database))


def _check_show(canonical: str) -> None:
    match = _SHOW_KIND.search(canonical)
    kind = " ".join(match.group(1).split()) if match else ""
    if kind not in SHOW_TABLES_KINDS:
        _refuse(f"SHOW {kind}".rstrip())


def _check_table(database: str, table: str) -> None:
    if database in OPEN_DATABASES:
        return
    if database == OVERLAY_DATABASE:
        _refuse(f"Table {database}.{table} (chDB's default database also names files)")
    if database == SYSTEM_DATABASE and table not in READABLE_SYSTEM_TABLES:
        _refuse(f"Table system.{table}")
