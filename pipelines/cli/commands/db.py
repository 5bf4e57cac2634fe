"""tykpulse db: the embedded database, served to other processes."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pipelines.cli.observe import NO_FLUSHES, serving
from pipelines.cli.options import deprecated_alias, pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.observe.service import ServiceWatch
from pipelines.settings import ObservabilitySettings
from sinks.clickhouse.client import connect, parse_dsn
from sinks.clickhouse.contract import DATABASE
from sinks.clickhouse.serve.server import ClickHouseHttpServer
from sinks.clickhouse.serve.settings import ServeSettings
from sinks.clickhouse.settings import DEFAULT_EMBEDDED_PATH, ClickHouseSettings
from sinks.clickhouse.sink import apply_schema
from sinks.errors import SinkError

log = logging.getLogger(__name__)


@click.group("db")
def group() -> None:
    """The embedded ClickHouse database (chDB)."""


def _apply_schema(path: Path, database: str) -> None:
    client = connect(ClickHouseSettings(clickhouse_dsn=f"chdb://{path}"))
    try:
        apply_schema(client, database)
    finally:
        client.close()


def _embedded_path(_ctx: click.Context, _param: click.Parameter, value: str) -> Path:
    """--path as a directory or a chdb:// DSN; a server DSN is refused with what to do instead."""
    try:
        target = parse_dsn(value)
    except SinkError as exc:
        raise click.BadParameter(str(exc)) from exc
    if target.embedded_path is None:
        msg = (
            f"{target.describe()} is a ClickHouse server already; db serve owns an embedded "
            "database (a directory or chdb:///path): point readers and writers at the server instead"
        )
        raise click.BadParameter(msg)
    if target.embedded_path.exists() and not target.embedded_path.is_dir():
        msg = f"{target.embedded_path} is not a directory"
        raise click.BadParameter(msg)
    return target.embedded_path


@group.command("serve")
@click.option(
    "--path",
    callback=_embedded_path,
    default=str(DEFAULT_EMBEDDED_PATH),
    show_default=True,
    envvar="TYKPULSE_DB_PATH",
    show_envvar=True,
    help="The embedded database to own: a directory, or the chdb:// DSN the workers would use "
    "(chdb:///var/lib/tykpulse/clickhouse). Its own variable: a TYKPULSE_CLICKHOUSE_DSN set for "
    "workers that write through this server must not point the server at itself.",
)
@click.option(
    "--schema/--no-schema",
    "with_schema",
    envvar="TYKPULSE_DB_SCHEMA",
    show_envvar=True,
    default=True,
    show_default=True,
    help="Create or update the rollup tables and views before serving.",
)
@click.option(
    "--clickhouse-database",
    "database",
    envvar="TYKPULSE_CLICKHOUSE_DATABASE",
    show_envvar=True,
    default=DATABASE,
    show_default=True,
    help="Database of the rollups.",
)
@deprecated_alias("--database", "database", "--clickhouse-database")
@settings_options(ServeSettings, flags={"serve_listen": "--listen"})
@settings_options(ObservabilitySettings, exclude=NO_FLUSHES)
@pass_settings(ServeSettings, ObservabilitySettings)
def serve(
    settings: ServeSettings, observe: ObservabilitySettings, path: Path, with_schema: bool, database: str
) -> None:
    """Own the embedded database and serve it over ClickHouse's HTTP interface.

    Several writers (workers with --clickhouse http://WRITER:PASSWORD@HOST:PORT)
    and any number of readers (notebooks, Grafana, alert rules) then share one
    embedded database, which chDB otherwise locks to a single process. Readers
    use the read-only user (--reader-user, `default` without a password unless
    set); writing needs --writer-user/--writer-password. Runs until SIGINT/SIGTERM.
    /metrics counts statements by role and outcome, refusals by HTTP status and the
    rows writers wrote (--metrics-port; `tykpulse status` finds it).
    """
    if not settings.enabled:
        msg = "--listen is off: nothing to serve"
        raise click.UsageError(msg)
    stop = stop_on_signals()
    server = ClickHouseHttpServer(path, settings)
    try:
        server.start()
        if with_schema:
            _apply_schema(path, database)
    except SinkError as exc:
        server.close()
        raise click.ClickException(str(exc)) from exc
    click.echo(f"tykpulse db serve: {server.url} (database {server.engine.connection_string})", err=True)

    def health() -> tuple[bool, str]:
        alive = server.serving
        return alive, "ok: serving" if alive else "unhealthy: the HTTP thread stopped"

    try:
        with serving(observe, ServiceWatch("db serve", server.readings, health), "db serve"):
            stop.wait()
    finally:
        server.close()
    log.info("db serve stopped")
