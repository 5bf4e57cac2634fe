"""The shipped Prometheus rules read metrics a worker really exports, with the labels they use.

A worker's write-ahead log flushes real messages into embedded ClickHouse; the
/metrics text is parsed and every metric and label each rule in
alerts/prometheus/ names must be in it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.observe.watch import WorkerWatch
from pipelines.wal.flusher import DurableFlusher
from sinks.clickhouse.sink import ClickHouseSink
from tests.component.test_wal_flusher import NODE, log_messages, make_flusher
from tests.durability import base_window_s

pytestmark = pytest.mark.component

RULES = Path(__file__).parents[2] / "alerts" / "prometheus"
METRIC = re.compile(r"\btykpulse_[a-z_]+")
LABEL_MATCH = re.compile(r"\{([^}]*)\}")


def watched_flusher(sink: ClickHouseSink, wal_dir: Path, messages: int) -> tuple[DurableFlusher, WorkerWatch]:
    """A WAL flusher reporting to a worker's watch, as `tykpulse run` wires them, with messages logged."""
    flusher = make_flusher(wal_dir, sink)
    watch = WorkerWatch(flusher.ingestor)
    flusher.report_to(watch)
    log_messages(flusher, range(messages), base_window_s())
    return flusher, watch


def exported(sink: ClickHouseSink, wal_dir: Path) -> dict[str, set[str]]:
    """Sample name -> label names, as Prometheus scrapes them from a worker that logged and flushed."""
    flusher, watch = watched_flusher(sink, wal_dir, 5)
    flusher.flush()
    watch.settled(0)
    text = generate_latest(watch.metrics.registry).decode()
    flusher.close()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_every_rule_names_exported_metrics_and_labels(sink: ClickHouseSink, tmp_path: Path) -> None:
    samples = exported(sink, tmp_path / "wal")
    assert samples["tykpulse_wal_backlog_records"] == set()
    rules = [
        rule
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    assert len(rules) >= 8
    for rule in rules:
        names = METRIC.findall(rule["expr"])
        assert names, rule["alert"]
        for name in names:
            assert name in samples, f"{rule['alert']}: {name} is not exported"
        for matcher in LABEL_MATCH.findall(rule["expr"]):
            label = matcher.split("=")[0].strip()
            assert any(label in samples[name] for name in names), f"{rule['alert']}: no label {label}"
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label == "instance" or any(label in samples[n] for n in names), rule["alert"]


def test_the_wal_metrics_count_what_the_log_did(sink: ClickHouseSink, tmp_path: Path) -> None:
    flusher, watch = watched_flusher(sink, tmp_path / "wal", 7)
    before = flusher.readings()
    flusher.flush()
    samples_text = generate_latest(watch.metrics.registry).decode()
    flusher.close()
    values = {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(samples_text)
        for sample in family.samples
    }
    assert before["backlog_records"] == 7
    assert before["appended"] == 7
    assert values["tykpulse_wal_backlog_records[]"] == 0  # all written
    assert values["tykpulse_flushes_total[('outcome', 'written')]"] == 1
    assert values["tykpulse_wal_dropped_total[('reason', 'full')]"] == 0
    assert values["tykpulse_wal_bytes[]"] > 0
    # A start reads the log back; the next ranges are decoded as logged.
    assert values["tykpulse_wal_flushed_ranges_total[('source', 'log')]"] == 1
    assert values["tykpulse_wal_flushed_ranges_total[('source', 'live')]"] == 0
    published = {p.node for p in watch.publisher_states()}
    assert published == {NODE}
