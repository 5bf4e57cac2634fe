"""tykpulse demo: the whole local pipeline on one machine, checked against ground truth."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Final

import click
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from rich.console import Console
from rich.table import Table

from pipelines.cli.options import secret_url_seen
from pipelines.cli.signals import stop_on_signals
from pipelines.runners.local import LocalRunner, RunSummary
from pipelines.settings import FirehoseSettings, WorkerSettings
from pipelines.simulate.verify import ViewCheck, check_all
from sinks.clickhouse.client import connect, parse_dsn
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.clickhouse.summary import ViewTotals, view_totals
from sinks.errors import SinkError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The demo's own embedded database: the only place it drops data without being told to.
# Not ./data/clickhouse, which is where `tykpulse run` keeps its rollups by default.
DEMO_PATH: Final = Path("data") / "demo"


class DemoClickHouseSettings(ClickHouseSettings):
    """ClickHouse settings from the demo's own options only, never from TYKPULSE_* variables.

    The demo drops its database. Analysts export TYKPULSE_CLICKHOUSE_DSN (and
    _DATABASE) to read real rollups, so taking them from the environment would
    point that drop at a real server without anyone asking for it.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@dataclasses.dataclass(frozen=True, slots=True)
class ExistingData:
    tables: int
    rows: int


def existing_data(settings: ClickHouseSettings) -> ExistingData | None:
    """What the target's tykpulse database holds, or None when there is no such database."""
    client = connect(settings)
    try:
        row = client.query(
            "SELECT count(), sum(ifNull(total_rows, 0)) FROM system.tables WHERE database = {db:String}",
            parameters={"db": settings.clickhouse_database},
        ).result_rows[0]
    finally:
        client.close()
    tables, rows = int(row[0]), int(row[1] or 0)
    return ExistingData(tables, rows) if tables else None


def reset_database(settings: ClickHouseSettings) -> None:
    client = connect(settings)
    try:
        client.command(f"DROP DATABASE IF EXISTS {settings.clickhouse_database} SYNC")
    finally:
        client.close()


def demo_settings(dsn: str | None) -> ClickHouseSettings:
    # absolute, not resolved: resolved, a link planted at data/demo (or data/ itself) was followed
    # before owned_directory could see it, and the demo chmodded and filled its target
    return DemoClickHouseSettings(clickhouse_dsn=dsn or f"chdb://{os.path.abspath(DEMO_PATH)}")


def prepare_target(settings: ClickHouseSettings, *, keep: bool | None, owned: bool) -> bool:
    """Drop the target's tykpulse database when that was asked for (or the demo owns it);
    returns whether the demo starts from an empty database.

    keep is None when neither --keep nor --fresh was given: then a database
    the demo does not own is only written to when it holds no tykpulse tables.
    """
    if keep:
        return False
    if keep is None and not owned:
        found = existing_data(settings)
        if found is not None:
            raise click.UsageError(refusal(settings, found))
        return True
    reset_database(settings)
    return True


def refusal(settings: ClickHouseSettings, found: ExistingData) -> str:
    database = settings.clickhouse_database
    return (
        f"{parse_dsn(settings.clickhouse_dsn).describe()} already holds database {database} "
        f"({found.tables} tables, {found.rows} rows). Starting fresh would run DROP DATABASE {database} "
        "there and lose them. Pass --fresh to drop it, or --keep to add the demo's rollups to it; "
        f"without --clickhouse the demo uses its own embedded database ({DEMO_PATH})."
    )


def render(totals: list[ViewTotals], checks: list[ViewCheck] | None, console: Console) -> None:
    verdicts = {c.view: c for c in checks or []}
    table = Table(title="What landed in ClickHouse", title_justify="left")
    for column in ("view", "rows", "totals", "vs ground truth"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for view in totals:
        check = verdicts.get(view.view)
        verdict = "" if check is None else ("[green]exact[/green]" if check.ok else "[red]MISMATCH[/red]")
        table.add_row(
            view.view, str(view.rows), " ".join(f"{k}={v}" for k, v in view.totals.items()), verdict
        )
    console.print(table)


@click.command("demo")
@click.option("--duration", default=20.0, show_default=True, help="Seconds the simulated fleet publishes.")
@click.option("--rate", default=20_000.0, show_default=True, help="Analytics records per second.")
@click.option("--batch", default=100, show_default=True, help="Records per firehose message.")
@click.option("--seed", default=1, show_default=True, help="Simulator seed.")
# No envvar on purpose (see DemoClickHouseSettings): only this option moves the demo off its own database.
@click.option(
    "--clickhouse",
    "dsn",
    callback=secret_url_seen,
    default=None,
    metavar="DSN",
    help=f"Write to this ClickHouse instead of the demo's own embedded database ({DEMO_PATH}). "
    "TYKPULSE_CLICKHOUSE_DSN is not read.",
)
@click.option(
    "--keep/--fresh",
    default=None,
    help="Add to earlier rollups (--keep) or DROP the tykpulse database first (--fresh). "
    "[default: --fresh on the demo's own database; with --clickhouse, refuse if the database exists]",
)
def command(duration: float, rate: float, batch: int, seed: int, dsn: str | None, keep: bool | None) -> None:
    """Run a simulated Tyk fleet and a worker over real ZeroMQ into ClickHouse, then print
    what landed per view and whether it matches the simulator's ground truth exactly.

    The simulator runs as its own process, publishing over tcp on loopback; the
    worker subscribes, windows, aggregates and flushes every second.
    """
    console = Console()
    clickhouse = demo_settings(dsn)
    try:
        fresh = prepare_target(clickhouse, keep=keep, owned=dsn is None)
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    truth_path = Path("data") / "demo-truth.json"
    port = free_port()
    firehose = FirehoseSettings(firehose=[f"@tcp://127.0.0.1:{port}"])
    worker_stop = threading.Event()
    interrupted = stop_on_signals()
    sink = ClickHouseSink(clickhouse)
    runner = LocalRunner(firehose, WorkerSettings(drain_timeout_s=1.0), sink)
    result: list[RunSummary] = []
    worker = threading.Thread(target=lambda: result.append(runner.run(worker_stop)), name="tykpulse-worker")
    worker.start()
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli.main",
            "simulate",
            "--connect",
            f"tcp://127.0.0.1:{port}",
            "--duration",
            str(duration),
            "--record-rate",
            str(rate),
            "--message-records",
            str(batch),
            "--seed",
            str(seed),
            "--truth",
            str(truth_path),
            "--node",
            "sim",
        ]
    )
    console.print(
        f"demo: simulator (pid {simulator.pid}) -> tcp://127.0.0.1:{port} -> worker -> "
        f"{sink.target.describe()}; {duration:.0f}s at {rate:.0f} records/s"
    )
    while simulator.poll() is None and not interrupted.wait(0.2):
        pass
    if simulator.poll() is None:
        simulator.terminate()
    simulator.wait()
    worker_stop.set()
    worker.join()
    sink.close()
    if not result:
        msg = "the worker failed; see the log above"
        raise click.ClickException(msg)
    if simulator.returncode != 0 and not interrupted.is_set():
        msg = f"the simulator exited with status {simulator.returncode}"
        raise click.ClickException(msg)
    client = connect(clickhouse)
    totals = view_totals(client, clickhouse.clickhouse_database)
    checks = None
    if simulator.returncode == 0 and truth_path.exists() and fresh:
        checks = check_all(client, clickhouse.clickhouse_database, json.loads(truth_path.read_text()))
    client.close()
    render(totals, checks, console)
    summary = result[0]
    console.print(
        f"worker: {summary.messages} messages, {summary.records} records, "
        f"{summary.lost} lost, {sum(summary.rejected.values())} rejected, {summary.flushes} flushes"
    )
    # The demo's database is not the default one the analyst tools open: say where to look.
    console.print(f"rollups: TYKPULSE_CLICKHOUSE_DSN={parse_dsn(clickhouse.clickhouse_dsn).describe()}")
    if checks is not None:
        bad = [c for c in checks if not c.ok]
        for check in bad:
            console.print(
                f"[red]{check.view}[/red]: {check.expected_rows} expected rows, "
                f"{check.actual_rows} found; " + "; ".join(check.problems[:3])
            )
        if bad:
            raise SystemExit(1)
        console.print(f"[green]every view matches the ground truth[/green] ({truth_path})")
