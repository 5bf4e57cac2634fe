"""tykpulse simulate: a simulated Tyk fleet on the firehose."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import zmq

from pipelines.cli.curve import curve_session
from pipelines.cli.observe import NO_FLUSHES, serving
from pipelines.cli.options import pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.observe.service import ServiceWatch
from pipelines.settings import CurveSettings, ObservabilitySettings, PublisherSettings, SimulatorSettings
from pipelines.simulate.fleet import Fleet, scaled_clock

log = logging.getLogger(__name__)


@click.command("simulate")
@settings_options(PublisherSettings, exclude=("heartbeat_interval_ms",))
@settings_options(
    SimulatorSettings,
    flags={"duration_s": "--duration"},
    aliases={"record_rate": "--rate", "message_records": "--batch"},
)
@settings_options(CurveSettings)
@settings_options(ObservabilitySettings, exclude=NO_FLUSHES)
@pass_settings(PublisherSettings, SimulatorSettings, CurveSettings, ObservabilitySettings)
def command(
    publisher_settings: PublisherSettings,
    settings: SimulatorSettings,
    curve_settings: CurveSettings,
    observe: ObservabilitySettings,
) -> None:
    """Publish realistic Tyk traffic: analytics, gateway events, notices, heartbeats.

    A fleet of gateways (and a dashboard node that sends configuration
    notices) publishes at --rate analytics records per second, with the
    rate-limit (429) and quota (403) events they fire, token lifecycle waves
    and configuration bursts. The same --seed gives the same traffic. With
    --truth FILE it writes the exact rollups of everything it sent.
    """
    if settings.time_scale != 1 and not settings.duration_s:
        msg = "--time-scale needs --duration: the run replays the last duration x scale seconds"
        raise click.UsageError(msg)
    stop = stop_on_signals()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    curve = curve_session(context, curve_settings)
    publisher = FirehosePublisher(
        context,
        publisher_settings.endpoints(),
        encoding=publisher_settings.encoding,
        sndhwm=publisher_settings.sndhwm,
        heartbeat_interval_ms=publisher_settings.heartbeat_interval_ms,
        curve=curve,
        max_message_bytes=publisher_settings.max_message_bytes,
    )
    clock = scaled_clock(settings.time_scale, settings.duration_s)
    fleet = Fleet(settings, publisher, node_prefix=publisher_settings.node, clock=clock)
    if settings.wait_subscribers_s and not publisher.wait_for_subscribers(settings.wait_subscribers_s):
        log.warning("no subscriber after %.1fs; publishing anyway", settings.wait_subscribers_s)
    log.info(
        "simulator publishing on %s rate=%.0f/s batch=%d gateways=%d",
        publisher.addresses,
        settings.record_rate,
        settings.message_records,
        settings.gateways,
    )
    with serving(observe, ServiceWatch("simulate", fleet.readings), "simulate"):
        summary = fleet.run(stop)
    publisher.close()
    if curve is not None:
        curve.close()
    if fleet.truth is not None and settings.truth:
        fleet.truth.write(Path(settings.truth), fleet.meta())
        log.info("ground truth written to %s", settings.truth)
    log.info(
        "simulator done analytics=%d events=%d notices=%d messages=%d rate=%.0f/s",
        summary.analytics,
        summary.events,
        summary.notices,
        summary.messages,
        summary.records_per_s,
    )
