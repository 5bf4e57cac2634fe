"""tykpulse run: the local worker."""

from __future__ import annotations

import logging

import click

from pipelines.cli.options import pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.runners.local import LocalRunner, RunSummary
from pipelines.settings import FirehoseSettings, WorkerSettings
from sinks.clickhouse.serve.embedded import serve_embedded
from sinks.clickhouse.serve.settings import ServeSettings
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkError

log = logging.getLogger(__name__)
CLICKHOUSE_FLAGS = {"clickhouse_dsn": "--clickhouse"}
SERVE_FLAGS = {"serve_listen": "--serve"}


def log_summary(summary: RunSummary) -> None:
    log.info(
        "worker done messages=%d records=%d lost=%d rejected=%d flushes=%d rows_written=%d "
        "unwritten_flushes=%d",
        summary.messages,
        summary.records,
        summary.lost,
        sum(summary.rejected.values()),
        summary.flushes,
        summary.rows_written,
        summary.unwritten_flushes,
    )


@click.command("run")
@settings_options(FirehoseSettings)
@settings_options(WorkerSettings)
@settings_options(ClickHouseSettings, flags=CLICKHOUSE_FLAGS)
@settings_options(ServeSettings, flags=SERVE_FLAGS)
@pass_settings(FirehoseSettings, WorkerSettings, ClickHouseSettings, ServeSettings)
def command(
    firehose: FirehoseSettings, worker: WorkerSettings, clickhouse: ClickHouseSettings, serve: ServeSettings
) -> None:
    """Subscribe to the firehose, window and aggregate, flush rollups to ClickHouse.

    Records are assigned to tumbling event-time windows and aggregated; every
    flush interval the partial rollups of what arrived are written, and
    ClickHouse merges them. SIGINT/SIGTERM drains the firehose, flushes
    everything and exits 0 (exit 1 if some flushes could not be written).

    With the embedded database (chdb DSN) the worker also serves it over
    ClickHouse's HTTP interface on --serve (127.0.0.1:8123, read-only unless
    --writer-password is set), so notebooks, dashboards and alert rules can
    read while it writes: TYKPULSE_CLICKHOUSE_DSN=http://127.0.0.1:8123.
    """
    stop = stop_on_signals()
    sink = ClickHouseSink(clickhouse)
    server = serve_embedded(clickhouse, serve)
    try:
        summary = LocalRunner(firehose, worker, sink).run(stop)
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if server is not None:
            server.close()
        sink.close()
    log_summary(summary)
    if summary.unwritten_flushes:
        raise SystemExit(1)
