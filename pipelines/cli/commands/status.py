"""tykpulse status: per-publisher health and the last flush, as readable tables.

Reads a running worker's /status endpoint (`tykpulse run --metrics-port`),
which works while the worker holds the embedded database; or, with
--clickhouse, the `publishers` view (a ClickHouse server, or an embedded
directory no worker has open). Exit status: 0 healthy, 1 unhealthy, 2 unreachable.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.summary import publisher_rows
from sinks.errors import SinkError

DEFAULT_PORT = 9464


def fetch_status(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        msg = f"worker URL must be http(s): {url}"
        raise click.UsageError(msg)
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout_s) as response:  # noqa: S310
        data: dict[str, Any] = json.loads(response.read())
    return data


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


# stopped: said goodbye (a planned stop), so neither green nor an alarm
_STATE_STYLES = {"live": "[green]{}[/green]", "stopped": "[dim]{}[/dim]"}


def _unhealthy(rows: list[dict[str, Any]]) -> bool:
    """A stale publisher is a problem; one that said goodbye is not."""
    return any(r["state"] not in _STATE_STYLES for r in rows)


def publishers_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Publishers", title_justify="left")
    for column in ("node", "boot", "state", "last seen", "interval", "messages", "lost"):
        table.add_column(column, justify="right" if column in ("messages", "lost") else "left")
    for row in rows:
        state = row["state"]
        table.add_row(
            row["node"],
            dt.datetime.fromtimestamp(row["boot"] / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            _STATE_STYLES.get(state, "[red]{}[/red]").format(state),
            _age(row["last_seen_age_s"]) + " ago",
            f"{row['interval_ms']} ms",
            str(row["messages"]),
            f"[yellow]{row['lost']}[/yellow]" if row["lost"] else "0",
        )
    return table


def render_worker(status: dict[str, Any], console: Console) -> None:
    verdict = "[green]healthy[/green]" if status["healthy"] else "[red]UNHEALTHY[/red]"
    console.print(f"worker {verdict}: {status['detail']} (up {_age(status['uptime_s'])})")
    totals = status["totals"]
    console.print(
        f"received {totals['messages']} messages, {totals['records']} records; lost {totals['lost']}, "
        f"duplicates {totals['duplicates']}, rejected {sum(status['rejected'].values())}; "
        f"queue {totals['queue_depth']}/{totals['queue_capacity']}, "
        f"unwritten flushes {totals['pending_flushes']}"
    )
    wal = status.get("wal") or {}
    if wal:
        level = "[red]" if wal["dropped_full"] else "[yellow]" if wal["used_ratio"] >= 0.8 else ""
        console.print(
            f"write-ahead log: {level}{wal['used_ratio']:.0%} of {wal['max_bytes'] / 2**20:.0f} MiB"
            f"{'[/]' if level else ''}, {wal['backlog_records']} records not yet in ClickHouse, "
            f"refused {wal['dropped_full']} (full) {wal['dropped_io_error']} (io errors), "
            f"dead-lettered rows {wal['dead_lettered_rows']}"
        )
    if wal.get("clickhouse_ready") == 0:
        console.print(
            "[yellow]waiting for the database[/yellow]: the schema is not applied yet (ClickHouse "
            "unreachable or refusing); the write-ahead log keeps what arrives until it answers"
        )
    last = status.get("last_write") or {}
    if last:
        when = _age(dt.datetime.now(tz=dt.UTC).timestamp() - last["at"]) + " ago"
        if last["ok"]:
            console.print(f"last flush: {when}, {last['rows']} rows in {last['seconds']}s")
        else:
            console.print(f"last flush: {when}, [red]failed[/red]: {last['error']}")
    else:
        console.print("last flush: none yet")
    if status["rejected"]:
        console.print(
            "rejected by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(status["rejected"].items()))
        )
    console.print(publishers_table(status["publishers"]))


def publishers_from_clickhouse(settings: ClickHouseSettings) -> list[dict[str, Any]]:
    client = connect(settings)
    try:
        return publisher_rows(client, settings.clickhouse_database)
    finally:
        client.close()


@click.command("status")
@click.option(
    "--worker",
    "url",
    envvar="TYKPULSE_STATUS_URL",
    show_envvar=True,
    default=f"http://127.0.0.1:{DEFAULT_PORT}",
    show_default=True,
    help="The worker's metrics endpoint (tykpulse run --metrics-port).",
)
@click.option(
    "--clickhouse",
    "dsn",
    default=None,
    help="Read the publishers view from this DSN instead of asking a worker.",
)
@click.option("--database", default="tykpulse", show_default=True, help="Database of the publishers view.")
def command(url: str, dsn: str | None, database: str) -> None:
    """Per-publisher health (live/stale/stopped, last seen, lost) and the worker's last flush."""
    console = Console()
    if dsn is not None:
        try:
            rows = publishers_from_clickhouse(
                ClickHouseSettings(clickhouse_dsn=dsn, clickhouse_database=database)
            )
        except SinkError as exc:
            raise click.ClickException(str(exc)) from exc
        console.print(publishers_table(rows))
        raise SystemExit(1 if _unhealthy(rows) else 0)
    try:
        status = fetch_status(url)
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[red]cannot reach the worker at {url}[/red]: {exc}")
        raise SystemExit(2) from exc
    render_worker(status, console)
    raise SystemExit(0 if status["healthy"] else 1)
