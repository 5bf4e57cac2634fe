"""tykpulse run: the local worker."""

from __future__ import annotations

import logging

import click

from pipelines.cli.options import pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.errors import ConfigurationError
from pipelines.runners.local import LocalRunner, RunSummary
from pipelines.settings import ArchiveSettings, FirehoseSettings, WalSettings, WorkerSettings
from pipelines.wal.build import build_journal
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkError

log = logging.getLogger(__name__)
CLICKHOUSE_FLAGS = {"clickhouse_dsn": "--clickhouse"}


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
@settings_options(WalSettings)
@settings_options(ArchiveSettings)
@settings_options(ClickHouseSettings, flags=CLICKHOUSE_FLAGS)
@pass_settings(FirehoseSettings, WorkerSettings, ClickHouseSettings, WalSettings, ArchiveSettings)
def command(
    firehose: FirehoseSettings,
    worker: WorkerSettings,
    clickhouse: ClickHouseSettings,
    wal: WalSettings,
    archive: ArchiveSettings,
) -> None:
    """Subscribe to the firehose, window and aggregate, flush rollups to ClickHouse.

    Records are assigned to tumbling event-time windows and aggregated; every
    flush interval the partial rollups of what arrived are written, and
    ClickHouse merges them. SIGINT/SIGTERM drains the firehose, flushes
    everything and exits 0 (exit 1 if some flushes could not be written).

    Every message is first appended to a write-ahead log (--wal-dir); flushes
    are exactly once through crashes and ClickHouse outages, and what could
    not be written before exit is written at the next start. A second
    SIGINT/SIGTERM exits at once; the log keeps what was received.
    """
    stop = stop_on_signals()
    sink = ClickHouseSink(clickhouse)
    try:
        journal = build_journal(firehose, worker, wal, archive, clickhouse, sink) if wal.wal else None
        runner = LocalRunner(
            firehose,
            worker,
            sink,
            ingestor=journal.ingestor if journal is not None else None,
            journal=journal,
            shutdown_timeout_s=wal.shutdown_timeout_s,
        )
        summary = runner.run(stop)
    except (SinkError, ConfigurationError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        sink.close()
    log_summary(summary)
    if summary.unwritten_flushes:
        raise SystemExit(1)
