"""The shipped Prometheus rules read metrics the commands really export, with the labels they use.

A worker's write-ahead log flushes real messages into embedded ClickHouse, and every other
long-running command's registry (pipelines.observe.metrics.COMMAND_FAMILIES) is scraped from
its ServiceWatch; the /metrics texts are parsed and every metric and label each rule in
alerts/prometheus/ names must be in one of them, and every command has a rule of its own.
(No promtool on the test machines: the expressions are read for names and matchers.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.observe.metrics import COMMAND_FAMILIES, Readings
from pipelines.observe.service import ServiceWatch
from pipelines.observe.watch import WorkerWatch
from pipelines.wal.flusher import DurableFlusher
from sinks.clickhouse.sink import ClickHouseSink
from tests.component.test_wal_flusher import NODE, log_messages, make_flusher
from tests.durability import base_window_s

pytestmark = pytest.mark.component

RULES = Path(__file__).parents[2] / "alerts" / "prometheus"
METRIC = re.compile(r"\btykpulse_[a-z_]+")
LABEL_MATCH = re.compile(r"\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!=|!~|=)\s*"([^"]*)"')


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


def service_samples(command: str) -> dict[str, set[str]]:
    """Sample name -> label names scraped from `command`'s registry, every family at its zero reading."""
    readings: Readings = {
        f.key: {v: 0.0 for v in f.values} if f.labels else 0.0 for f in COMMAND_FAMILIES[command]
    }
    text = generate_latest(ServiceWatch(command, lambda: readings).registry).decode()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
            if sample.name == "tykpulse_info":
                samples.setdefault(f"command={sample.labels['command']}", set())
    return samples


def shipped_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_every_rule_names_exported_metrics_and_labels(sink: ClickHouseSink, tmp_path: Path) -> None:
    worker = exported(sink, tmp_path / "wal")
    assert worker["tykpulse_wal_backlog_records"] == set()
    samples = dict(worker)
    for command in COMMAND_FAMILIES:
        for name, labels in service_samples(command).items():
            samples.setdefault(name, set()).update(labels)
    rules = shipped_rules()
    assert len(rules) >= 18
    for rule in rules:
        names = METRIC.findall(rule["expr"])
        assert names, rule["alert"]
        for name in names:
            assert name in samples, f"{rule['alert']}: {name} is not exported"
        for selector in LABEL_MATCH.findall(rule["expr"]):
            for label, wanted in MATCHER.findall(selector):
                assert any(label in samples[name] for name in names), f"{rule['alert']}: no label {label}"
                if label == "command":
                    assert f"command={wanted}" in samples, f"{rule['alert']}: no command {wanted}"
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label == "instance" or any(label in samples[n] for n in names), rule["alert"]


def test_every_command_has_a_rule_of_its_own() -> None:
    """A rule per command names a metric only that command's families export (or the common health)."""
    exprs = " ".join(rule["expr"] for rule in shipped_rules())
    assert "tykpulse_healthy" in exprs
    named = set(METRIC.findall(exprs))
    for command, families in COMMAND_FAMILIES.items():
        others = {f.name for c, fs in COMMAND_FAMILIES.items() if c != command for f in fs}
        own = {f.name + ("_total" if f.kind == "counter" else "") for f in families if f.name not in others}
        assert own & named, f"no rule reads a metric of {command} alone (one of {sorted(own)})"


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
    # A log opened with nothing unflushed decodes as it logs from the start: no range is read back.
    assert values["tykpulse_wal_flushed_ranges_total[('source', 'log')]"] == 0
    assert values["tykpulse_wal_flushed_ranges_total[('source', 'live')]"] == 1
    published = {p.node for p in watch.publisher_states()}
    assert published == {NODE}
