"""tykpulse report: a one-page HTML summary of a time range."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import click

from pipelines import analyst
from pipelines.cli.options import deprecated_alias, secret_url_seen
from sinks.errors import SinkError

log = logging.getLogger(__name__)


def _scope(
    hours: float,
    start: dt.datetime | None,
    end: dt.datetime | None,
    orgs: tuple[str, ...],
    apis: tuple[str, ...],
) -> analyst.Scope:
    if hours and (start or end):
        msg = "use --hours or --from/--to, not both"
        raise click.UsageError(msg)
    if hours:
        return analyst.Scope.last(hours=hours, org_id=list(orgs) or None, api_id=list(apis) or None)
    return analyst.Scope(start=start, end=end, org_id=list(orgs) or None, api_id=list(apis) or None)


@click.command("report")
@click.option(
    "--clickhouse",
    "dsn",
    callback=secret_url_seen,
    envvar="TYKPULSE_CLICKHOUSE_DSN",
    show_envvar=True,
    default=None,
    help="The ClickHouse to read the rollups from [default: a running worker's endpoint, else "
    "./data/clickhouse].",
)
@click.option(
    "--hours",
    envvar="TYKPULSE_REPORT_HOURS",
    show_envvar=True,
    default=0.0,
    show_default=True,
    help="The last N hours (0: everything).",
)
@click.option(
    "--from",
    "start",
    envvar="TYKPULSE_FROM",
    show_envvar=True,
    type=click.DateTime(),
    default=None,
    help="Start of the range (UTC), inclusive.",
)
@deprecated_alias("--start", "start", "--from", type=click.DateTime())
@click.option(
    "--to",
    "end",
    envvar="TYKPULSE_TO",
    show_envvar=True,
    type=click.DateTime(),
    default=None,
    help="End of the range (UTC), exclusive.",
)
@deprecated_alias("--end", "end", "--to", type=click.DateTime())
@click.option(
    "--org",
    "orgs",
    envvar="TYKPULSE_ORG",
    show_envvar=True,
    multiple=True,
    help="Only this organisation (repeatable; the variable: space-separated).",
)
@click.option(
    "--api",
    "apis",
    envvar="TYKPULSE_API",
    show_envvar=True,
    multiple=True,
    help="Only this API (repeatable; the variable: space-separated).",
)
@click.option(
    "--title",
    envvar="TYKPULSE_REPORT_TITLE",
    show_envvar=True,
    default="tykpulse report",
    show_default=True,
    help="Title of the page.",
)
@click.option(
    "--out",
    envvar="TYKPULSE_REPORT_OUT",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("tykpulse-report.html"),
    show_default=True,
    help="Where to write the HTML file.",
)
def command(
    dsn: str | None,
    hours: float,
    start: dt.datetime | None,
    end: dt.datetime | None,
    orgs: tuple[str, ...],
    apis: tuple[str, ...],
    title: str,
    out: Path,
) -> None:
    """Write a one-page HTML summary (headline numbers, key charts, storms, changes) of a time range.

    The page is self-contained (charts are inline PNGs), so it can be mailed
    or attached to a ticket. Needs matplotlib (pip install 'tykpulse[analyst]').
    """
    try:
        from pipelines.report.page import render  # matplotlib only when reporting
    except ImportError as exc:
        msg = f"tykpulse report needs matplotlib: pip install 'tykpulse[analyst]' ({exc})"
        raise click.ClickException(msg) from exc
    from pipelines.report.data import fetch

    scope = _scope(hours, start, end, orgs, apis)
    try:
        client = analyst.connect(dsn)
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        data = fetch(client, scope)
    finally:
        client.close()
    out.write_text(render(data, title=title))
    click.echo(f"report written to {out} ({out.stat().st_size // 1024} KiB)")
