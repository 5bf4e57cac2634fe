"""tykpulse run: the local worker."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import click
import zmq

from pipelines.cli.curve import curve_session
from pipelines.cli.observe import serving
from pipelines.cli.options import pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.errors import ConfigurationError
from pipelines.keys import worker_with_key
from pipelines.observe.metrics import DB_SERVE, add_families
from pipelines.observe.watch import WorkerWatch
from pipelines.runners.local import LocalRunner, RunSummary
from pipelines.security.notices import notice_check
from pipelines.settings import (
    ArchiveSettings,
    CurveSettings,
    FirehoseSettings,
    NoticeSettings,
    ObservabilitySettings,
    WalSettings,
    WorkerSettings,
)
from pipelines.wal.build import build_journal, wal_directory
from sinks.clickhouse.client import parse_dsn
from sinks.clickhouse.serve.embedded import serve_embedded
from sinks.clickhouse.serve.settings import ServeSettings
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkError, SinkRejectedError

log = logging.getLogger(__name__)
CLICKHOUSE_FLAGS = {"clickhouse_dsn": "--clickhouse"}
SERVE_FLAGS = {"serve_listen": "--serve"}


def check_dsn(clickhouse: ClickHouseSettings) -> None:
    """Refuse a DSN no retry can make work (an unknown scheme, a chdb DSN without a path).

    Only this is checked before the worker starts: an unreachable or refusing
    server is retried by the WAL flusher, so a deploy during an outage loses nothing.
    """
    try:
        parse_dsn(clickhouse.clickhouse_dsn)
    except SinkRejectedError as exc:
        raise click.BadParameter(str(exc), param_hint="'--clickhouse'") from exc


def sink_failed(exc: SinkError, wal: WalSettings) -> click.ClickException:
    if wal.wal:
        return click.ClickException(str(exc))
    # Without the log nothing received could be kept through the outage, so the worker does not start.
    return click.ClickException(
        f"{exc}\n--no-wal keeps nothing durable, so the worker needs ClickHouse at start: "
        "start ClickHouse first, or run with the write-ahead log (the default), which waits for it"
    )


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
@settings_options(ServeSettings, flags=SERVE_FLAGS)
@settings_options(NoticeSettings)
@settings_options(CurveSettings)
@settings_options(ObservabilitySettings)
@pass_settings(
    FirehoseSettings,
    WorkerSettings,
    WalSettings,
    ArchiveSettings,
    ClickHouseSettings,
    ServeSettings,
    NoticeSettings,
    CurveSettings,
    ObservabilitySettings,
)
def command(
    firehose: FirehoseSettings,
    worker: WorkerSettings,
    wal: WalSettings,
    archive: ArchiveSettings,
    clickhouse: ClickHouseSettings,
    serve: ServeSettings,
    notices: NoticeSettings,
    curve_settings: CurveSettings,
    observe: ObservabilitySettings,
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

    ClickHouse need not be up at start: the worker subscribes and logs at once,
    and applies the schema and drains the log when ClickHouse answers
    (`tykpulse status` shows it waiting). With --no-wal it must be up.

    With the embedded database (chdb DSN) the worker also serves it over
    ClickHouse's HTTP interface on --serve (127.0.0.1:8123, read-only unless
    --writer-password is set), so notebooks, dashboards and alert rules can
    read while it writes: TYKPULSE_CLICKHOUSE_DSN=http://127.0.0.1:8123.

    SIGHUP re-reads the CURVE allowlist.
    """
    stop = stop_on_signals()
    check_dsn(clickhouse)
    try:
        # Beside the data: data/ for data/wal, the database's directory for an embedded one.
        worker = worker_with_key(worker, wal_directory(wal, clickhouse).parent)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    context: zmq.Context[Any] = zmq.Context.instance()
    curve = curve_session(context, curve_settings)
    try:
        check = notice_check(notices.node_secret.get_secret_value(), notices.notice_public_key)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    sink = ClickHouseSink(clickhouse)
    try:
        journal = build_journal(firehose, worker, wal, archive, clickhouse, sink, notice_check=check)
    except ConfigurationError as exc:
        sink.close()
        raise click.UsageError(str(exc)) from exc
    watch = WorkerWatch(journal.ingestor, healthy_flush_age_s=observe.healthy_flush_age_s)
    metrics = contextlib.ExitStack()
    metrics.enter_context(serving(observe, watch, "run"))
    server = serve_embedded(clickhouse, serve)
    if server is not None:
        add_families(watch.registry, DB_SERVE, server.readings)
    try:
        runner = LocalRunner(
            firehose,
            worker,
            sink,
            context=context,
            watch=watch,
            curve=curve,
            journal=journal,
            shutdown_timeout_s=wal.shutdown_timeout_s,
        )
        summary = runner.run(stop)
    except SinkError as exc:
        raise sink_failed(exc, wal) from exc
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        if server is not None:
            server.close()
        sink.close()
        metrics.close()
        if curve is not None:
            curve.close()
    log_summary(summary)
    if summary.unwritten_flushes:
        raise SystemExit(1)
