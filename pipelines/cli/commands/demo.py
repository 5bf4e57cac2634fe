"""tykpulse demo: the whole local pipeline on one machine, checked against ground truth."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pipelines.cli.signals import stop_on_signals
from pipelines.runners.local import LocalRunner, RunSummary
from pipelines.settings import FirehoseSettings, WorkerSettings
from pipelines.simulate.verify import ViewCheck, check_all
from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.clickhouse.summary import ViewTotals, view_totals

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reset_database(settings: ClickHouseSettings) -> None:
    client = connect(settings)
    client.command(f"DROP DATABASE IF EXISTS {settings.clickhouse_database} SYNC")
    client.close()


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
@click.option(
    "--clickhouse",
    "dsn",
    envvar="TYKPULSE_CLICKHOUSE_DSN",
    show_envvar=True,
    default=None,
    help="ClickHouse DSN [default: embedded, ./data/clickhouse].",
)
@click.option(
    "--keep/--fresh",
    default=False,
    show_default=True,
    help="Keep earlier rollups (--keep) or start from an empty tykpulse database.",
)
def command(duration: float, rate: float, batch: int, seed: int, dsn: str | None, keep: bool) -> None:
    """Run a simulated Tyk fleet and a worker over real ZeroMQ into ClickHouse, then print
    what landed per view and whether it matches the simulator's ground truth exactly.

    The simulator runs as its own process, publishing over tcp on loopback; the
    worker subscribes, windows, aggregates and flushes every second.
    """
    console = Console()
    clickhouse = ClickHouseSettings(clickhouse_dsn=dsn) if dsn else ClickHouseSettings()
    if not keep:
        reset_database(clickhouse)
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
            "--rate",
            str(rate),
            "--batch",
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
    if simulator.returncode == 0 and truth_path.exists() and not keep:
        checks = check_all(client, clickhouse.clickhouse_database, json.loads(truth_path.read_text()))
    client.close()
    render(totals, checks, console)
    summary = result[0]
    console.print(
        f"worker: {summary.messages} messages, {summary.records} records, "
        f"{summary.lost} lost, {sum(summary.rejected.values())} rejected, {summary.flushes} flushes"
    )
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
