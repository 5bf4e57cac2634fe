"""Every Prometheus metric a worker exports, defined in this one module.

Counters that the receive path already keeps (IngestStats) are not
incremented per message a second time: a collector reads them when Prometheus
scrapes, so metrics cost the hot path nothing. What only the flush side sees
(flush latency, sink errors, rows written) is recorded directly.

    tykpulse_messages_received_total          accepted messages (heartbeats included)
    tykpulse_records_received_total           accepted records (counted at flush)
    tykpulse_rejected_total{reason}           rejected messages or records
    tykpulse_lost_messages_total              sequence gaps
    tykpulse_duplicates_total                 repeated sequence numbers, dropped
    tykpulse_queue_depth                      records buffered for the next flush
    tykpulse_queue_capacity                   the bound after which the receiver pauses
    tykpulse_receiver_paused_total            times the receiver waited for room
    tykpulse_pending_flushes                  flushes kept for retry
    tykpulse_flush_seconds                    histogram of one flush write
    tykpulse_flushes_total{outcome}           written / retry / dropped
    tykpulse_sink_errors_total{kind}          unavailable / rejected
    tykpulse_rows_written_total               partial rows inserted
    tykpulse_last_flush_ok_age_seconds        since the worker last had nothing unwritten
    tykpulse_publishers{state}                live / stale / stopped publisher incarnations tracked
    tykpulse_publisher_last_seen_age_seconds{node,boot}   the 1,000 most heard incarnations
    tykpulse_publisher_series_omitted         incarnations tracked beyond those
    tykpulse_wal_bytes, tykpulse_wal_max_bytes, tykpulse_wal_used_ratio    the log's disk use and bound
    tykpulse_wal_backlog_records              logged records not yet written to ClickHouse
    tykpulse_wal_dropped_total{reason}        messages the log could not keep (full, io_error, unloggable)
    tykpulse_wal_fsyncs_total, tykpulse_wal_damaged_records_total, tykpulse_dead_lettered_rows_total

Every long-running command also exports (ServiceMetrics, read from its running counters at scrape):

    tykpulse_info{command,version}            1, naming the command this process runs
    tykpulse_healthy                          1 while /healthz answers 200, else 0
    process_*                                 CPU, memory, open files, start time
    bridge kafka:  tykpulse_messages_received_total, tykpulse_lost_messages_total,
                   tykpulse_duplicates_total, tykpulse_kafka_messages_produced_total,
                   tykpulse_kafka_records_produced_total, tykpulse_kafka_produce_failures_total{reason},
                   tykpulse_queue_depth, tykpulse_queue_capacity
    bridge tyk:    tykpulse_tyk_records_moved_total, tykpulse_tyk_records_recovered_total,
                   tykpulse_records_published_total, tykpulse_records_too_large_total,
                   tykpulse_tyk_records_undecodable_total, tykpulse_tyk_lists_skipped_total,
                   tykpulse_notices_published_total, tykpulse_notices_rejected_total,
                   tykpulse_notices_dropped_total, tykpulse_notices_set_aside_total,
                   tykpulse_redis_errors_total
    bridge tyk-webhook: tykpulse_webhook_events_accepted_total, tykpulse_records_published_total,
                   tykpulse_records_too_large_total, tykpulse_webhook_rejected_total{reason}
    proxy:         tykpulse_proxy_frames_total{side,direction}, tykpulse_proxy_bytes_total{side,direction}
    db serve:      tykpulse_serve_queries_total{role,outcome}, tykpulse_serve_errors_total{status},
                   tykpulse_serve_cancelled_total, tykpulse_serve_replies_abandoned_total,
                   tykpulse_serve_rows_written_total,
                   tykpulse_serve_connections_{open,peak}, tykpulse_serve_connections_closed_total{reason},
                   tykpulse_serve_reader_in_flight_{,peak_,limit_}bytes,
                   tykpulse_serve_reader_budget_refused_total
                   (`run` exports them too while it serves its own database)
    worker (Faust, through pipelines.observe.faust_sensor): tykpulse_kafka_records_consumed_total,
                   tykpulse_kafka_commits_total, tykpulse_kafka_rebalances_total,
                   tykpulse_kafka_assigned_partitions, tykpulse_messages_received_total,
                   tykpulse_records_received_total, tykpulse_flushes_total{outcome},
                   tykpulse_rows_written_total, tykpulse_last_flush_ok_age_seconds
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Final, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelines.firehose.liveness import PublisherState
from pipelines.firehose.protocol import RejectReason

# per-incarnation series exported at most (tykpulse_publisher_last_seen_age_seconds)
MAX_PUBLISHER_SERIES: Final = 1000
FLUSH_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerReadings(Protocol):
    """What the scrape-time collector reads (implemented by pipelines.observe.watch.WorkerWatch)."""

    def totals(self) -> dict[str, int]: ...
    def rejected(self) -> dict[str, int]: ...
    def publisher_states(self) -> list[PublisherState]: ...
    def now_ns(self) -> int: ...
    def last_ok_age_s(self) -> float: ...
    def wal(self) -> dict[str, float]: ...


_COUNTERS: Final = {
    "messages": ("tykpulse_messages_received", "Accepted firehose messages, heartbeats included."),
    "records": ("tykpulse_records_received", "Accepted records (counted when flushed)."),
    "lost": ("tykpulse_lost_messages", "Messages reported lost by sequence gaps."),
    "duplicates": ("tykpulse_duplicates", "Messages dropped as duplicates of a seen sequence number."),
    "receiver_paused": (
        "tykpulse_receiver_paused",
        "Times the receiver waited for the flusher (queue full).",
    ),
}
_WAL_GAUGES: Final = {
    "disk_bytes": ("tykpulse_wal_bytes", "Bytes the write-ahead log holds on disk."),
    "max_bytes": ("tykpulse_wal_max_bytes", "The log's disk bound (--wal-max-bytes)."),
    "used_ratio": ("tykpulse_wal_used_ratio", "Share of the disk bound in use."),
    "backlog_records": ("tykpulse_wal_backlog_records", "Logged records not yet written to ClickHouse."),
}
_WAL_COUNTERS: Final = {
    "fsyncs": ("tykpulse_wal_fsyncs", "fsync calls on the log."),
    "damaged_records": (
        "tykpulse_wal_damaged_records",
        "Log records skipped as damaged (bad checksum, position out of sequence).",
    ),
    "dead_lettered_rows": ("tykpulse_dead_lettered_rows", "Rows ClickHouse refused for good, to the file."),
}
_WAL_DROPS: Final = ("full", "io_error", "unloggable")
_GAUGES: Final = {
    "queue_depth": ("tykpulse_queue_depth", "Records and rejections buffered for the next flush."),
    "queue_capacity": ("tykpulse_queue_capacity", "Buffered records after which the receiver pauses."),
    "pending_flushes": ("tykpulse_pending_flushes", "Flushes kept for retry after a sink failure."),
}


class _ReadingsCollector(Collector):
    def __init__(self, readings: WorkerReadings) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        totals = self.readings.totals()
        for key, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=totals.get(key, 0))
        for key, (name, doc) in _GAUGES.items():
            yield GaugeMetricFamily(name, doc, value=totals.get(key, 0))
        rejected = CounterMetricFamily(
            "tykpulse_rejected", "Rejected messages or records.", labels=["reason"]
        )
        # Every known reason is exported from the start, at 0: Prometheus' increase()
        # only sees a rise from a sample it already has.
        counts = {reason.value: 0 for reason in RejectReason} | self.readings.rejected()
        for reason, count in sorted(counts.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield GaugeMetricFamily(
            "tykpulse_last_flush_ok_age_seconds",
            "Seconds since the worker last had every flush written.",
            value=self.readings.last_ok_age_s(),
        )
        yield from self._publishers()
        yield from self._wal()

    def _wal(self) -> Iterator[Metric]:
        wal = self.readings.wal()
        if not wal:
            return
        for key, (name, doc) in _WAL_GAUGES.items():
            yield GaugeMetricFamily(name, doc, value=wal[key])
        for key, (name, doc) in _WAL_COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=wal[key])
        dropped = CounterMetricFamily(
            "tykpulse_wal_dropped", "Messages the log could not keep, by reason.", labels=["reason"]
        )
        for reason in _WAL_DROPS:
            dropped.add_metric([reason], wal[f"dropped_{reason}"])
        yield dropped
        ranges = CounterMetricFamily(
            "tykpulse_wal_flushed_ranges",
            "Flushed log ranges by how they were decoded: live (as logged, the flusher keeps up) or "
            "log (read back: after a restart, an outage or while behind).",
            labels=["source"],
        )
        for source in ("live", "log"):
            ranges.add_metric([source], wal[f"{source}_ranges"])
        yield ranges

    def _publishers(self) -> Iterator[Metric]:
        now = self.readings.now_ns()
        states = self.readings.publisher_states()
        count = GaugeMetricFamily("tykpulse_publishers", "Publisher incarnations tracked.", labels=["state"])
        by_state = collections.Counter(s.state for s in states)
        for name in ("live", "stale", "stopped"):
            count.add_metric([name], by_state[name])
        yield count
        age = GaugeMetricFamily(
            "tykpulse_publisher_last_seen_age_seconds",
            "Seconds since a message of this publisher incarnation was received "
            f"(the {MAX_PUBLISHER_SERIES} most heard).",
            labels=["node", "boot"],
        )
        # Node names are the senders' to choose: a flood of made-up ones kept 10,000 series here
        # (the worker's bound), each new name a new series in Prometheus. The most heard are the
        # publishers that matter; the count of the rest is exported beside them.
        heard = sorted(states, key=lambda s: (s.messages, s.last_seen_ns), reverse=True)
        for state in heard[:MAX_PUBLISHER_SERIES]:
            age.add_metric([state.node, str(state.boot)], state.silent_ns(now) / 1e9)
        yield age
        yield GaugeMetricFamily(
            "tykpulse_publisher_series_omitted",
            "Publisher incarnations tracked but left out of tykpulse_publisher_last_seen_age_seconds.",
            value=max(0, len(heard) - MAX_PUBLISHER_SERIES),
        )


class WorkerMetrics:
    """A registry per worker (tests build several); the flush side records into it directly."""

    def __init__(self, readings: WorkerReadings, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.flush_seconds = Histogram(
            "tykpulse_flush_seconds",
            "Seconds to write one flush's partial rollups to the sink.",
            buckets=FLUSH_BUCKETS,
            registry=self.registry,
        )
        self.flushes = Counter(
            "tykpulse_flushes", "Flush writes by outcome.", ["outcome"], registry=self.registry
        )
        self.sink_errors = Counter(
            "tykpulse_sink_errors", "Sink errors by kind.", ["kind"], registry=self.registry
        )
        for outcome in ("written", "retry", "dropped"):
            self.flushes.labels(outcome)
        for kind in ("unavailable", "rejected"):
            self.sink_errors.labels(kind)
        self.rows_written = Counter(
            "tykpulse_rows_written", "Partial rollup rows inserted.", registry=self.registry
        )
        self.registry.register(_ReadingsCollector(readings))


# ---------------------------------------------------------------------------------------- every command

Readings = Mapping[str, float | Mapping[str, float]]


@dataclasses.dataclass(frozen=True, slots=True)
class Family:
    """One exported metric read from a command's counters: `key` in its readings, a number or, with
    `labels`, a mapping "value[/value]" -> number (every key in `values` exported, at 0 if absent)."""

    key: str
    name: str
    doc: str
    kind: Literal["counter", "gauge"] = "counter"
    labels: tuple[str, ...] = ()
    values: tuple[str, ...] = ()


KAFKA_BRIDGE: Final = (
    Family("received", "tykpulse_messages_received", "Firehose messages received."),
    Family("lost", "tykpulse_lost_messages", "Messages reported lost by sequence gaps."),
    Family("duplicates", "tykpulse_duplicates", "Messages seen twice (same sequence number)."),
    Family("produced", "tykpulse_kafka_messages_produced", "Firehose messages acknowledged by Kafka."),
    Family("records", "tykpulse_kafka_records_produced", "Kafka records (bundles of messages) produced."),
    Family(
        "failed",
        "tykpulse_kafka_produce_failures",
        "Messages Kafka did not take, by reason (the producer's error class).",
        labels=("reason",),
        values=("KafkaConnectionError", "KafkaTimeoutError", "MessageSizeTooLargeError"),
    ),
    Family("queue_depth", "tykpulse_queue_depth", "Received chunks waiting for Kafka.", "gauge"),
    Family("queue_capacity", "tykpulse_queue_capacity", "Chunks held before ZeroMQ's HWM drops.", "gauge"),
)
# Both Tyk bridges (pipelines.bridges.publishing): records a worker would refuse, never sent.
_TOO_LARGE: Final = Family(
    "too_large",
    "tykpulse_records_too_large",
    "Records not published: alone over the firehose's message limit.",
)
TYK_BRIDGE: Final = (
    Family("moved", "tykpulse_tyk_records_moved", "Analytics records moved out of Tyk's lists."),
    Family("recovered", "tykpulse_tyk_records_recovered", "Parked records published again after a crash."),
    Family("published", "tykpulse_records_published", "Records published on the firehose."),
    _TOO_LARGE,
    Family("undecodable", "tykpulse_tyk_records_undecodable", "Analytics elements that did not decode."),
    Family(
        "skipped_lists",
        "tykpulse_tyk_lists_skipped",
        "Analytics lists a drain left alone: one of their keys held another type.",
    ),
    Family("notices", "tykpulse_notices_published", "Cluster notifications published as notices."),
    Family("bad_notices", "tykpulse_notices_rejected", "Cluster notifications dropped as malformed."),
    Family("dropped_notices", "tykpulse_notices_dropped", "Held notices dropped while nobody subscribed."),
    Family(
        "set_aside_notices",
        "tykpulse_notices_set_aside",
        "Cluster notifications not published: another bridge held the notifications lease.",
    ),
    Family("redis_errors", "tykpulse_redis_errors", "Drain cycles that failed on a Redis error."),
)
# Every reason the receiver counts besides the body checks' own (pipelines.bridges.tyk_webhook_server).
WEBHOOK_REJECTIONS: Final = ("bad_http", "method", "no_subscriber", "not_found", "too_large", "unauthorized")
WEBHOOK_BRIDGE: Final = (
    Family("accepted", "tykpulse_webhook_events_accepted", "Webhook events accepted."),
    Family("published", "tykpulse_records_published", "Records published on the firehose."),
    _TOO_LARGE,
    Family(
        "rejected",
        "tykpulse_webhook_rejected",
        "Webhook requests rejected, by reason.",
        labels=("reason",),
        values=WEBHOOK_REJECTIONS,
    ),
)
_PROXY_SIDES: Final = ("frontend/in", "frontend/out", "backend/in", "backend/out")
PROXY: Final = (
    Family(
        "frames",
        "tykpulse_proxy_frames",
        "Frames through the proxy by socket side and direction.",
        labels=("side", "direction"),
        values=_PROXY_SIDES,
    ),
    Family(
        "bytes",
        "tykpulse_proxy_bytes",
        "Bytes through the proxy by socket side and direction.",
        labels=("side", "direction"),
        values=_PROXY_SIDES,
    ),
)
FAUST_WORKER: Final = (
    Family("consumed", "tykpulse_kafka_records_consumed", "Kafka records the worker's agent received."),
    Family("commits", "tykpulse_kafka_commits", "Kafka offset commits completed."),
    Family("rebalances", "tykpulse_kafka_rebalances", "Consumer group rebalances this worker went through."),
    Family("assigned", "tykpulse_kafka_assigned_partitions", "Partitions this worker holds.", "gauge"),
    Family("messages", "tykpulse_messages_received", "Firehose messages in flushes written."),
    Family("records", "tykpulse_records_received", "Records in flushes written."),
    Family(
        "flushes",
        "tykpulse_flushes",
        "Flush writes by outcome.",
        labels=("outcome",),
        values=("written", "retry", "dropped"),
    ),
    Family("rows", "tykpulse_rows_written", "Partial rollup rows inserted."),
    Family(
        "last_ok_age_s",
        "tykpulse_last_flush_ok_age_seconds",
        "Seconds since the worker last had no flush waiting on a retry.",
        "gauge",
    ),
)
ALERTS: Final = (
    Family(
        "evaluations",
        "tykpulse_alert_evaluations",
        "Alert rule evaluations by outcome (failed: the rule's query did not run).",
        labels=("outcome",),
        values=("ok", "failed"),
    ),
    Family("firing", "tykpulse_alerts_firing", "Series firing now, over every rule.", "gauge"),
    Family(
        "series_omitted",
        "tykpulse_alert_series_omitted",
        "Series a rule returned over its cap per evaluation (MAX_SERIES_PER_RULE), summarised in one alert.",
    ),
    Family("delivered", "tykpulse_alerts_delivered", "Alerts (firing and resolved) the webhook took."),
    Family("delivery_failures", "tykpulse_alert_delivery_failures", "POSTs to the webhook that failed."),
)
# the statuses a refusal of `db serve` usually has (exported at 0 from the start); others are counted too
SERVE_ERROR_STATUSES: Final = ("400", "403", "404", "413", "500")
DB_SERVE: Final = (
    Family(
        "queries",
        "tykpulse_serve_queries",
        "Statements run for readers and writers, by outcome (error: the engine or the gate refused it).",
        labels=("role", "outcome"),
        values=("reader/ok", "reader/error", "writer/ok", "writer/error"),
    ),
    Family(
        "errors",
        "tykpulse_serve_errors",
        "Requests answered with an error, by HTTP status (browser guards, framing, size, credentials, SQL).",
        labels=("status",),
        values=SERVE_ERROR_STATUSES,
    ),
    Family("cancelled", "tykpulse_serve_cancelled", "Readers' queries dropped because the client went away."),
    Family(
        "abandoned",
        "tykpulse_serve_replies_abandoned",
        "Answers not delivered whole: the client closed, reset, or stopped reading for the socket timeout.",
    ),
    Family("rows_written", "tykpulse_serve_rows_written", "Rows the writers' inserts wrote."),
    Family("connections_open", "tykpulse_serve_connections_open", "HTTP connections open now.", "gauge"),
    Family(
        "connections_peak",
        "tykpulse_serve_connections_peak",
        "The most HTTP connections open at once (the cap is --serve-max-connections).",
        "gauge",
    ),
    Family(
        "connections_closed",
        "tykpulse_serve_connections_closed",
        "Connections the cap closed: evicted (the idle one waiting longest, to make room), refused "
        "(full of running or writers' connections), head_timed_out (request head not whole in 10 s).",
        labels=("reason",),
        values=("evicted", "refused", "head_timed_out"),
    ),
    Family(
        "reader_in_flight_bytes",
        "tykpulse_serve_reader_in_flight_bytes",
        "Bytes readers' requests hold now (bodies, statements, results not yet sent).",
        "gauge",
    ),
    Family(
        "reader_in_flight_peak_bytes",
        "tykpulse_serve_reader_in_flight_peak_bytes",
        "The most bytes readers' requests held at once.",
        "gauge",
    ),
    Family(
        "reader_in_flight_limit_bytes",
        "tykpulse_serve_reader_in_flight_limit_bytes",
        "What readers may hold in all (--serve-reader-max-inflight-mb).",
        "gauge",
    ),
    Family(
        "reader_budget_refused",
        "tykpulse_serve_reader_budget_refused",
        "Readers' requests answered 503 because what they would hold did not fit the budget.",
    ),
)
SIMULATE: Final = (
    Family(
        "sent",
        "tykpulse_simulate_records_sent",
        "Records the simulated fleet published, by kind (analytics records, gateway events, notices).",
        labels=("kind",),
        values=("analytics", "events", "notices"),
    ),
    Family("messages", "tykpulse_simulate_messages_sent", "Firehose messages published (heartbeats too)."),
)
COMMAND_FAMILIES: Final[Mapping[str, tuple[Family, ...]]] = {
    "alerts run": ALERTS,
    "db serve": DB_SERVE,
    "bridge kafka": KAFKA_BRIDGE,
    "bridge tyk": TYK_BRIDGE,
    "bridge tyk-webhook": WEBHOOK_BRIDGE,
    "proxy": PROXY,
    "simulate": SIMULATE,
    "worker": FAUST_WORKER,
}


def _family(spec: Family, value: float | Mapping[str, float]) -> Metric:
    kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    if not isinstance(value, Mapping):
        return kind(spec.name, spec.doc, value=value)
    family = kind(spec.name, spec.doc, labels=list(spec.labels))
    # Known label values from the start, at 0: Prometheus' increase() only sees a rise from a sample.
    for key, count in sorted(({v: 0.0 for v in spec.values} | dict(value)).items()):
        family.add_metric(key.split("/"), count)
    return family


class _StatsCollector(Collector):
    def __init__(self, families: tuple[Family, ...], readings: Callable[[], Readings]) -> None:
        self.families = families
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        readings = self.readings()
        for spec in self.families:
            if spec.key in readings:
                yield _family(spec, readings[spec.key])


class _CommonCollector(Collector):
    def __init__(self, command: str, version: str, healthy: Callable[[], bool]) -> None:
        self.command, self.version, self.healthy = command, version, healthy

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "tykpulse_info", "The command this process runs.", labels=["command", "version"]
        )
        info.add_metric([self.command, self.version], 1)
        yield info
        yield GaugeMetricFamily(
            "tykpulse_healthy", "1 while /healthz answers 200.", value=int(self.healthy())
        )


def service_registry(
    command: str, version: str, readings: Callable[[], Readings], healthy: Callable[[], bool]
) -> CollectorRegistry:
    """The registry of one long-running command other than `run`: its families, info, health, process."""
    registry = CollectorRegistry()
    registry.register(_CommonCollector(command, version, healthy))
    registry.register(_StatsCollector(COMMAND_FAMILIES[command], readings))
    ProcessCollector(registry=registry)
    return registry


def add_families(
    registry: CollectorRegistry, families: tuple[Family, ...], readings: Callable[[], Readings]
) -> None:
    """Another part of the process exports its families too (the database a `run` worker serves)."""
    registry.register(_StatsCollector(families, readings))


def add_common(registry: CollectorRegistry, command: str, version: str, healthy: Callable[[], bool]) -> None:
    """What every command exports besides its own families (the local worker's registry gets it too)."""
    registry.register(_CommonCollector(command, version, healthy))
    ProcessCollector(registry=registry)
