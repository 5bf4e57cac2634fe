"""tykpulse worker: a Faust worker over the bridge's Kafka topic (pipelines.runners.faust_app)."""

from __future__ import annotations

import click

from pipelines.cli.observe import serving
from pipelines.cli.options import pass_settings, settings_options
from pipelines.errors import ConfigurationError
from pipelines.settings import (
    FaustWorkerSettings,
    FirehoseSettings,
    KafkaSettings,
    NoticeSettings,
    ObservabilitySettings,
    WorkerSettings,
)
from sinks.clickhouse.settings import ClickHouseSettings

KAFKA_FLAGS = {"kafka_bootstrap": "--kafka", "kafka_topic": "--topic"}
CLICKHOUSE_FLAGS = {"clickhouse_dsn": "--clickhouse"}


@click.command("worker")
@settings_options(KafkaSettings, flags=KAFKA_FLAGS)
@settings_options(FaustWorkerSettings)
@settings_options(WorkerSettings, exclude=("drain_timeout_s", "max_pending_flushes"))
@settings_options(ClickHouseSettings, flags=CLICKHOUSE_FLAGS)
@settings_options(FirehoseSettings, exclude=("firehose", "topics", "rcvhwm", "rcvbuf_bytes"))
@settings_options(NoticeSettings)
@settings_options(ObservabilitySettings)
@pass_settings(
    KafkaSettings,
    FaustWorkerSettings,
    WorkerSettings,
    ClickHouseSettings,
    FirehoseSettings,
    NoticeSettings,
    ObservabilitySettings,
)
@click.pass_context
def command(
    ctx: click.Context,
    kafka: KafkaSettings,
    faust_settings: FaustWorkerSettings,
    worker: WorkerSettings,
    clickhouse: ClickHouseSettings,
    firehose: FirehoseSettings,
    notices: NoticeSettings,
    observe: ObservabilitySettings,
) -> None:
    """Consume the bridge's topic in a consumer group and write rollups to ClickHouse.

    Run several: Kafka spreads the topic's partitions over them and moves a
    dead worker's partitions to the others. Each flush covers an exact offset
    range and is recorded in ClickHouse with its rollups, so a partition
    resumes where ClickHouse says, and nothing is counted twice or lost
    (docs/scaling.md). The same app runs with
    `faust -A pipelines.runners.faust_app worker`. SIGTERM stops cleanly.

    /metrics, /healthz and /status (--metrics-port) count what the consumer
    received (a Faust sensor) and what was written; /status also shows the
    assigned partitions and their offsets. /healthz fails while flushes are
    retried, or records consumed, without a flush landing for
    --healthy-flush-age-s. Faust's own web server is off (no connection cap).
    """
    import faust  # deferred: Faust takes a while to import and only this command needs it

    from pipelines.observe.faust_sensor import observe_worker
    from pipelines.runners.faust_app import create_app

    try:
        app = create_app(kafka, faust_settings, worker, clickhouse, firehose, notices)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    level = ctx.find_root().params.get("log_level") or "info"
    watch = observe_worker(app, observe.healthy_flush_age_s)
    with serving(observe, watch, "worker"):
        faust.Worker(app, loglevel=level).execute_from_commandline()
