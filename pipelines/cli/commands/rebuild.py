"""tykpulse rebuild: recompute the rollups of a time range from the archive."""

from __future__ import annotations

import click

from pipelines.archive.rebuild import Rebuilder
from pipelines.archive.timerange import TimeRange, format_instant
from pipelines.cli.options import DSN_FORMS, pass_settings, settings_options
from pipelines.cli.progress import progress_options, progress_shown
from pipelines.errors import ConfigurationError, PipelineError
from pipelines.keys import worker_with_key
from pipelines.settings import FirehoseSettings, WorkerSettings
from pipelines.wal.build import key_directory
from sinks.clickhouse.archive import EventsArchive
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkError

_FIREHOSE_UNUSED = ("firehose", "topics", "rcvhwm", "rcvbuf_bytes")
_WORKER_UNUSED = ("flush_interval_s", "drain_timeout_s", "max_pending_flushes")


@click.command("rebuild")
@click.option(
    "--from",
    "start",
    envvar="TYKPULSE_FROM",
    show_envvar=True,
    required=True,
    help="Range start: ISO 8601 (UTC by default) or unix seconds.",
)
@click.option(
    "--to",
    "end",
    envvar="TYKPULSE_TO",
    show_envvar=True,
    required=True,
    help="End of the range (exclusive), same forms as --from.",
)
@click.option(
    "--force",
    envvar="TYKPULSE_REBUILD_FORCE",
    show_envvar=True,
    is_flag=True,
    help="Rebuild even where the archive starts after --from.",
)
@progress_options
@settings_options(FirehoseSettings, exclude=_FIREHOSE_UNUSED)
@settings_options(WorkerSettings, exclude=_WORKER_UNUSED)
@settings_options(
    ClickHouseSettings,
    flags={"clickhouse_dsn": "--clickhouse"},
    help={
        "clickhouse_dsn": "The ClickHouse holding the archive, where the range's rollups are rebuilt: "
        f"{DSN_FORMS}."
    },
)
@pass_settings(FirehoseSettings, WorkerSettings, ClickHouseSettings)
def command(
    firehose: FirehoseSettings,
    worker: WorkerSettings,
    clickhouse: ClickHouseSettings,
    start: str,
    end: str,
    force: bool,
    progress: bool | None,
    quiet: bool,
) -> None:
    """Recompute traffic, rate_limit_hits, token_churn and config_changes for [--from, --to)
    from the archive, replacing (not adding to) what is stored.

    The range is widened to whole hours. Use the workers' --window-seconds and
    key: --key-hash-salt, else their key file (key-digest.secret beside the data,
    found as `run` finds it, or --key-hash-salt-file); a missing one is an error.
    Needs workers that ran with --archive; with embedded
    ClickHouse, stop the worker first (one process per data directory).
    Progress and ETA go to stderr when it is a terminal.
    """
    try:
        # the workers' key file, never a new key: rebuilt digests must equal the stored ones
        worker = worker_with_key(worker, key_directory(clickhouse), create=False)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    sink = ClickHouseSink(clickhouse)
    try:
        span = TimeRange.parse(start, end)
        sink.setup()
        with progress_shown(progress, quiet) as report:
            rebuilder = Rebuilder(sink, EventsArchive(sink), firehose, worker, progress=report)
            summary = rebuilder.run(span, force=force)
    except (SinkError, PipelineError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        sink.close()
    click.echo(
        f"rebuilt {format_instant(summary.from_s * 10**9)} .. {format_instant(summary.to_s * 10**9)}: "
        f"{summary.messages} archived messages, {summary.records} records; "
        f"{summary.rows_deleted} state rows replaced by {summary.rows_written} partial rows"
    )
