"""tykpulse replay: re-publish archived messages on a firehose."""

from __future__ import annotations

import logging

import click
import zmq

from pipelines.archive.replay import Replayer
from pipelines.archive.timerange import TimeRange, format_instant
from pipelines.bridges.publishing import BridgePublisher
from pipelines.cli.options import clickhouse_help, pass_settings, settings_options
from pipelines.cli.progress import progress_options, progress_shown
from pipelines.cli.signals import stop_on_signals
from pipelines.errors import PipelineError
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.settings import ReplaySettings
from sinks.clickhouse.archive import EventsArchive
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkError

log = logging.getLogger(__name__)


@click.command("replay")
@click.option(
    "--from",
    "start",
    envvar="TYKPULSE_FROM",
    show_envvar=True,
    required=True,
    help="First receive time: ISO 8601 (UTC by default) or unix s.",
)
@click.option(
    "--to",
    "end",
    envvar="TYKPULSE_TO",
    show_envvar=True,
    required=True,
    help="End of the range (exclusive), same forms as --from.",
)
@progress_options
@settings_options(ReplaySettings, aliases={"message_rate": "--rate"})
@settings_options(
    ClickHouseSettings,
    flags={"clickhouse_dsn": "--clickhouse"},
    help=clickhouse_help("holding the archive (events_raw) to replay"),
)
@pass_settings(ReplaySettings, ClickHouseSettings)
def command(
    replay: ReplaySettings,
    clickhouse: ClickHouseSettings,
    start: str,
    end: str,
    progress: bool | None,
    quiet: bool,
) -> None:
    """Re-publish the archived messages received in [--from, --to) on --publish.

    Messages go out in receive order under the replay's own nodes
    (<node-prefix><original node>, new boot, seq from 0), with API keys as the
    archive holds them (hashed). Needs workers that ran with --archive; with
    embedded ClickHouse, stop the worker first (one process per data directory).
    Progress and ETA go to stderr when it is a terminal.
    """
    stop = stop_on_signals()
    sink = ClickHouseSink(clickhouse)
    publisher = None
    try:
        span = TimeRange.parse(start, end)
        publisher = BridgePublisher(
            FirehosePublisher(
                zmq.Context.instance(),
                [parse_endpoint(e) for e in replay.publish],
                max_message_bytes=replay.max_message_bytes,
            )
        )
        if replay.wait_subscribers_s and not publisher.publisher.wait_for_subscribers(
            replay.wait_subscribers_s
        ):
            log.warning("no subscriber after %.1fs; publishing anyway", replay.wait_subscribers_s)
        with progress_shown(progress, quiet) as report:
            archive = EventsArchive(sink)
            replayer = Replayer(
                archive,
                publisher,
                node_prefix=replay.node_prefix,
                rate=replay.message_rate,
                progress=report,
                max_future_ns=replay.max_future_s * 1_000_000_000,
                max_past_ns=replay.max_past_s * 1_000_000_000,
            )
            summary = replayer.run(span, stop)
    except (SinkError, PipelineError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if publisher is not None:
            publisher.close()
        sink.close()
    click.echo(
        f"replayed {summary.messages} messages ({summary.records} records) of {summary.nodes} nodes "
        f"received {format_instant(span.start_ns)} .. {format_instant(span.end_ns)} "
        f"in {summary.seconds:.1f}s"
        + (
            f"; {summary.too_large} records not sent: alone over --max-message-bytes"
            if summary.too_large
            else ""
        )
        + (
            f"; {summary.refused} records not sent: refused by the archiving worker for their time"
            if summary.refused
            else ""
        )
        + (
            f"; {summary.unreadable} archived messages not sent: damaged (see the log)"
            if summary.unreadable
            else ""
        )
    )
