"""tykpulse status: the health of what is running, per-publisher state and the last flush.

Without --url it asks every tykpulse command running on this host (each
announces its /metrics endpoint in the runtime directory, see
pipelines.observe.discovery); with --url, the one endpoint. /status works
while a worker holds the embedded database. With --clickhouse it reads the
`publishers` view instead (a ClickHouse server, or an embedded directory no
worker has open). Exit status: 0 healthy, 1 unhealthy, 2 nothing reachable.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any, Final

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.cli.options import secret_url_seen
from pipelines.observe.discovery import announced
from pipelines.observe.discovery import runtime_dir as runtime_dir_of
from pipelines.observe.printable import spelled_out
from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.summary import publisher_rows
from sinks.errors import SinkError

# A run's /status lists its publishers: megabytes at most. Whatever answers at a URL is read no
# further than this (a port can outlive the command that announced it and be someone else's).
MAX_STATUS_BYTES: Final = 64 << 20


class NotAStatusError(ValueError):
    """The endpoint answered, but not with a tykpulse /status."""


def fetch_status(url: str, timeout_s: float = 5.0, max_bytes: int = MAX_STATUS_BYTES) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        msg = f"worker URL must be http(s): {url}"
        raise click.UsageError(msg)
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout_s) as response:  # noqa: S310
        body = response.read(max_bytes + 1)
    if len(body) > max_bytes:
        msg = f"an answer over {max_bytes} bytes"
        raise NotAStatusError(msg)
    try:
        data = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError included
        msg = f"not JSON ({exc})"
        raise NotAStatusError(msg) from exc
    if not isinstance(data, dict) or not {"healthy", "detail", "uptime_s"} <= data.keys():
        msg = "JSON without a status's healthy, detail and uptime_s"
        raise NotAStatusError(msg)
    return data


def _plain(value: object) -> str:
    """Text from elsewhere (a publisher's node name, a worker's error) shown as itself: rich markup
    escaped, and control and format characters (ANSI sequences, newlines, bidi overrides) spelled
    out, so a name can neither fail the table (`[/red]`), restyle the terminal nor forge a row."""
    return escape(spelled_out(str(value)))


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
            _plain(row["node"]),
            dt.datetime.fromtimestamp(row["boot"] / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            _STATE_STYLES.get(state, "[red]{}[/red]").format(_plain(state)),
            _age(row["last_seen_age_s"]) + " ago",
            f"{row['interval_ms']} ms",
            str(row["messages"]),
            f"[yellow]{row['lost']}[/yellow]" if row["lost"] else "0",
        )
    return table


def render_service(status: dict[str, Any], console: Console) -> None:
    """A command other than `run`: its health and every counter it keeps."""
    verdict = "[green]healthy[/green]" if status["healthy"] else "[red]UNHEALTHY[/red]"
    console.print(
        f"{_plain(status['command'])} {verdict}: {_plain(status['detail'])} (up {_age(status['uptime_s'])})"
    )
    table = Table(show_header=False, box=None, padding=(0, 2))
    for name, value in status.get("totals", {}).items():
        if isinstance(value, dict):
            value = ", ".join(f"{_plain(k)}={_number(v)}" for k, v in sorted(value.items())) or "0"
        elif isinstance(value, float | int):
            value = _number(value)
        table.add_row(_plain(name), _plain(value))
    console.print(table)
    state = status.get("state")
    partitions = state.get("partitions") if isinstance(state, dict) else None
    if isinstance(partitions, dict) and partitions:
        console.print(partitions_table(partitions))


def partitions_table(partitions: dict[str, Any]) -> Table:
    """A Faust worker's assigned partitions: where it reads next and what has landed in ClickHouse."""
    table = Table(title="assigned partitions", box=None, padding=(0, 2))
    for column in ("partition", "next offset", "landed offset"):
        table.add_column(column, justify="right")
    # numeric order without trusting the keys to be numbers (the endpoint may be anyone's)
    for partition, offsets in sorted(partitions.items(), key=lambda item: (len(item[0]), item[0])):
        known = offsets if isinstance(offsets, dict) else {}
        landed = known.get("landed_offset")
        table.add_row(
            _plain(partition), _plain(known.get("next_offset")), "-" if landed is None else _plain(landed)
        )
    return table


def _number(value: float) -> str:
    """A counter whole (`:g` printed 12,345,678 rows as 1.23457e+07), anything else to 6 digits."""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def render(status: dict[str, Any], console: Console) -> None:
    if status.get("command", "run") == "run":
        render_worker(status, console)
    else:
        render_service(status, console)


def render_worker(status: dict[str, Any], console: Console) -> None:
    verdict = "[green]healthy[/green]" if status["healthy"] else "[red]UNHEALTHY[/red]"
    console.print(f"worker {verdict}: {_plain(status['detail'])} (up {_age(status['uptime_s'])})")
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
            console.print(f"last flush: {when}, [red]failed[/red]: {_plain(last['error'])}")
    else:
        console.print("last flush: none yet")
    if status["rejected"]:
        console.print(
            "rejected by reason: "
            + ", ".join(f"{_plain(k)}={_plain(v)}" for k, v in sorted(status["rejected"].items()))
        )
    console.print(publishers_table(status["publishers"]))


def publishers_from_clickhouse(settings: ClickHouseSettings) -> list[dict[str, Any]]:
    client = connect(settings)
    try:
        return publisher_rows(client, settings.clickhouse_database)
    finally:
        client.close()


def _endpoints(url: str | None, directory: str | None) -> list[tuple[str, str]]:
    """(what, url) of every endpoint to ask: --url, else whatever announced itself on this host."""
    if url is not None:
        return [(url, url)]
    return [(f"{e['command']} (pid {e['pid']})", str(e["url"])) for e in announced(runtime_dir_of(directory))]


def _ask(what: str, url: str, console: Console) -> int:
    try:
        status = fetch_status(url)
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[red]cannot reach {_plain(what)} at {_plain(url)}[/red]: {_plain(exc)}")
        return 2
    except NotAStatusError as exc:
        where = f"{_plain(what)} at {_plain(url)}"
        console.print(f"[red]{where} answered no tykpulse status[/red]: {_plain(exc)}")
        return 2
    try:
        render(status, console)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a status of another shape
        where = f"{_plain(what)} at {_plain(url)}"
        console.print(f"[red]cannot read the status of {where}[/red]: {_plain(repr(exc))}")
        return 2
    return 0 if status["healthy"] is True else 1


@click.command("status")
@click.option(
    "--url",
    envvar="TYKPULSE_STATUS_URL",
    show_envvar=True,
    default=None,
    help="Ask this metrics endpoint (http://HOST:PORT of a command's --metrics-port) only. "
    "[default: every tykpulse command running on this host]",
)
@click.option("--worker", "url", hidden=True, deprecated="use --url", help="Old name of --url.")
@click.option(
    "--runtime-dir",
    envvar="TYKPULSE_RUNTIME_DIR",
    show_envvar=True,
    default=None,
    help="Where running commands announce their endpoint (their --runtime-dir). "
    "[default: $XDG_RUNTIME_DIR/tykpulse, else <tmp>/tykpulse-<uid>]",
)
@click.option(
    "--clickhouse",
    "dsn",
    callback=secret_url_seen,
    envvar="TYKPULSE_STATUS_CLICKHOUSE_DSN",
    show_envvar=True,
    default=None,
    help="Read the publishers view from this DSN instead of asking running commands (its own "
    "variable: a TYKPULSE_CLICKHOUSE_DSN set for the worker must not switch status away from it).",
)
@click.option(
    "--clickhouse-database",
    "database",
    envvar="TYKPULSE_CLICKHOUSE_DATABASE",
    show_envvar=True,
    default="tykpulse",
    show_default=True,
    help="Database of the publishers view (with --clickhouse).",
)
@click.option("--database", "database", hidden=True, deprecated="use --clickhouse-database")
def command(url: str | None, runtime_dir: str | None, dsn: str | None, database: str) -> None:
    """Health of the tykpulse commands running here; per-publisher state and the last flush of a worker.

    Asks every long-running command on this host (run, worker, proxy, the bridges) for its
    /status, or only --url; exits 0 when all are healthy, 1 when one is not, 2 when none answers.
    """
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
    endpoints = _endpoints(url, runtime_dir)
    if not endpoints:
        where = runtime_dir_of(runtime_dir)
        console.print(
            f"[red]no tykpulse command is running here[/red] (none announced in {where}); try --url"
        )
        raise SystemExit(2)
    codes = []
    for what, address in endpoints:
        if len(endpoints) > 1:
            console.rule(_plain(f"{what} {address}"))
        codes.append(_ask(what, address, console))
    raise SystemExit(max(codes))
