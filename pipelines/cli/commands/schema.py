"""tykpulse schema: apply or print the output contract's DDL."""

from __future__ import annotations

from typing import Any

import click

from pipelines.cli.options import deprecated_alias, pass_settings, settings_options
from sinks.clickhouse.client import connect, parse_dsn
from sinks.clickhouse.ddl import ClusterLayout, schema_statements
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import apply_schema
from sinks.errors import SinkError

CLICKHOUSE_FLAGS = {"clickhouse_dsn": "--clickhouse"}


def layout_options(fn: Any) -> Any:
    fn = click.option(
        "--on-cluster/--no-on-cluster",
        envvar="TYKPULSE_SCHEMA_ON_CLUSTER",
        show_envvar=True,
        default=True,
        show_default=True,
        help="With --clickhouse-cluster: run each statement ON CLUSTER (needs distributed DDL), or node "
        "by node.",
    )(fn)
    return click.option(
        "--replicated/--no-replicated",
        envvar="TYKPULSE_SCHEMA_REPLICATED",
        show_envvar=True,
        default=True,
        show_default=True,
        help="With --clickhouse-cluster: Replicated*MergeTree tables (needs Keeper), or plain ones on "
        "every shard.",
    )(fn)


def cluster_layout(cluster: str, replicated: bool, on_cluster: bool) -> ClusterLayout | None:
    return ClusterLayout(cluster, replicated=replicated, on_cluster=on_cluster) if cluster else None


@click.group("schema")
def group() -> None:
    """The rollup tables and views in ClickHouse."""


@group.command("apply")
@settings_options(
    ClickHouseSettings,
    flags=CLICKHOUSE_FLAGS,
    aliases={"clickhouse_cluster": "--cluster"},
    help={
        "clickhouse_dsn": "The ClickHouse to create the tables and views in: chdb:///abs/path or "
        "http(s)://user:password@host:port."
    },
)
@layout_options
@pass_settings(ClickHouseSettings)
def apply(settings: ClickHouseSettings, replicated: bool, on_cluster: bool) -> None:
    """Create or update every table and view (idempotent; workers do it on start too).

    With --clickhouse-cluster NAME the schema is laid out for a sharded, replicated
    cluster: Replicated*MergeTree state tables, Distributed tables to insert
    and read through, every statement ON CLUSTER (docs/scaling.md).
    """
    layout = cluster_layout(settings.clickhouse_cluster, replicated, on_cluster)
    try:
        client = connect(settings)
        seconds = apply_schema(client, settings.clickhouse_database, layout)
        client.close()
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    target = parse_dsn(settings.clickhouse_dsn).describe()
    count = len(schema_statements(settings.clickhouse_database, layout))
    click.echo(
        f"applied {count} statements to {target} database={settings.clickhouse_database} in {seconds:.2f}s"
    )


@group.command("show")
@click.option(
    "--clickhouse-database",
    "database",
    envvar="TYKPULSE_CLICKHOUSE_DATABASE",
    show_envvar=True,
    default="tykpulse",
    show_default=True,
    help="Database name to render.",
)
@deprecated_alias("--database", "database", "--clickhouse-database")
@click.option(
    "--clickhouse-cluster",
    "cluster",
    envvar="TYKPULSE_CLICKHOUSE_CLUSTER",
    show_envvar=True,
    default="",
    help="Render the cluster layout for this cluster name.",
)
@deprecated_alias("--cluster", "cluster", "--clickhouse-cluster")
@layout_options
def show(database: str, cluster: str, replicated: bool, on_cluster: bool) -> None:
    """Print the DDL without connecting anywhere."""
    for statement in schema_statements(database, cluster_layout(cluster, replicated, on_cluster)):
        click.echo(statement + ";\n")
