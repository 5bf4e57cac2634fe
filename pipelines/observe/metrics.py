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
    tykpulse_publisher_last_seen_age_seconds{node,boot}
    tykpulse_wal_bytes, tykpulse_wal_max_bytes, tykpulse_wal_used_ratio    the log's disk use and bound
    tykpulse_wal_backlog_records              logged records not yet written to ClickHouse
    tykpulse_wal_dropped_total{reason}        messages the log could not keep (full, io_error, unloggable)
    tykpulse_wal_fsyncs_total, tykpulse_wal_damaged_records_total, tykpulse_dead_lettered_rows_total
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelines.firehose.liveness import PublisherState
from pipelines.firehose.protocol import RejectReason

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
    "damaged_records": ("tykpulse_wal_damaged_records", "Log records skipped for a bad checksum."),
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
            "Seconds since a message of this publisher incarnation was received.",
            labels=["node", "boot"],
        )
        for state in states:
            age.add_metric([state.node, str(state.boot)], state.silent_ns(now) / 1e9)
        yield age


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
