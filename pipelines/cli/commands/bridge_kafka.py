"""tykpulse bridge kafka: the firehose -> a Kafka topic."""

from __future__ import annotations

import logging

import click
import zmq

from pipelines.bridges.kafka_bridge import KafkaBridge
from pipelines.cli.curve import curve_session
from pipelines.cli.observe import NO_FLUSHES, serving
from pipelines.cli.options import pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.observe.service import Progress, ServiceWatch
from pipelines.settings import (
    CurveSettings,
    FirehoseSettings,
    KafkaBridgeSettings,
    KafkaSettings,
    ObservabilitySettings,
    WorkerSettings,
)

log = logging.getLogger(__name__)
KAFKA_FLAGS = {"kafka_bootstrap": "--kafka", "kafka_topic": "--topic"}


@click.command("kafka")
@settings_options(FirehoseSettings, exclude=("max_records", "max_future_s", "max_past_s"))
@settings_options(KafkaSettings, flags=KAFKA_FLAGS)
@settings_options(KafkaBridgeSettings)
@settings_options(
    WorkerSettings,
    exclude=(
        "window_seconds",
        "flush_interval_s",
        "key_hash_salt",
        "max_pending_flushes",
        "max_pending_records",
    ),
)
@settings_options(CurveSettings)
@settings_options(ObservabilitySettings, exclude=NO_FLUSHES)
@pass_settings(
    FirehoseSettings, KafkaSettings, KafkaBridgeSettings, WorkerSettings, CurveSettings, ObservabilitySettings
)
def command(
    firehose: FirehoseSettings,
    kafka: KafkaSettings,
    bridge: KafkaBridgeSettings,
    worker: WorkerSettings,
    curve_settings: CurveSettings,
    observe: ObservabilitySettings,
) -> None:
    """Subscribe to the firehose and produce every message to a Kafka topic.

    Records are keyed by publishing node (so each node's sequence stays in
    order in one partition and losses stay countable downstream) and are
    produced idempotently with acks=all. A record carries one message (its
    envelope and topic in headers) or a bundle of a node's messages received
    together (--bridge-bundle-messages), compressed (--bridge-compression).
    SIGINT/SIGTERM drains the firehose until quiet, then flushes.
    Exit status 1 if some messages could not be produced. /healthz fails while
    produce failures rise and nothing is acknowledged (--metrics-port).
    """
    stop = stop_on_signals()
    curve = curve_session(zmq.Context.instance(), curve_settings)
    kafka_bridge = KafkaBridge(firehose, kafka, bridge, worker, curve=curve)
    health = Progress(
        "produced", lambda: kafka_bridge.summary.produced, lambda: sum(kafka_bridge.summary.failed.values())
    )
    try:
        with serving(observe, ServiceWatch("bridge kafka", kafka_bridge.readings, health), "bridge kafka"):
            summary = kafka_bridge.run(stop)
    finally:
        if curve is not None:
            curve.close()
    log.info(
        "bridge done received=%d produced=%d records=%d lost=%d duplicates=%d failed=%s",
        summary.received,
        summary.produced,
        summary.records,
        summary.lost,
        summary.duplicates,
        dict(summary.failed) or 0,
    )
    if summary.failed:
        raise SystemExit(1)
