"""tykpulse schema: apply or print the output contract's DDL."""

from __future__ import annotations

import click

from pipelines.cli.options import pass_settings, settings_options
from sinks.clickhouse.client import connect, parse_dsn
from sinks.clickhouse.ddl import schema_statements
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import apply_schema
from sinks.errors import SinkError

CLICKHOUSE_FLAGS = {"clickhouse_dsn": "--clickhouse"}


@click.group("schema")
def group() -> None:
    """The rollup tables and views in ClickHouse."""


@group.command("apply")
@settings_options(ClickHouseSettings, flags=CLICKHOUSE_FLAGS)
@pass_settings(ClickHouseSettings)
def apply(settings: ClickHouseSettings) -> None:
    """Create or update every table and view (idempotent; workers do it on start too)."""
    try:
        client = connect(settings)
        seconds = apply_schema(client, settings.clickhouse_database)
        client.close()
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    target = parse_dsn(settings.clickhouse_dsn).describe()
    count = len(schema_statements(settings.clickhouse_database))
    click.echo(
        f"applied {count} statements to {target} database={settings.clickhouse_database} in {seconds:.2f}s"
    )


@group.command("show")
@click.option("--database", default="tykpulse", show_default=True, help="Database name to render.")
def show(database: str) -> None:
    """Print the DDL without connecting anywhere."""
    for statement in schema_statements(database):
        click.echo(statement + ";\n")
