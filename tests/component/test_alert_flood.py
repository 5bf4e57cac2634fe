"""A publisher that invents node names cannot flood Alertmanager or write into its labels.

300 nodes, each with a sequence gap, go through the real path into embedded ClickHouse under
hostile names (newlines, terminal escapes, bidi overrides, very long names: set on the computed
rollups, as a worker from before ingest refused such names wrote them); the shipped data_loss
rule runs on the engine and the evaluator POSTs to a real local HTTP receiver.
"""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.alerts import AlertmanagerClient, Evaluator, load_rules
from pipelines.alerts.state import MAX_LABEL_CHARS, MAX_SERIES_PER_RULE
from pipelines.ingest import Ingestor
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.harness.alert_receiver import AlertReceiver
from tests.helpers import message

pytestmark = pytest.mark.component

RULES = {r.name: r for r in load_rules(Path(__file__).parents[2] / "alerts").rules}
HOSTILE = 300


def hostile_name(i: int) -> str:
    forms = [
        f"gw-{i}\nseverity: none\n\x1b[31mFIRING\x1b[0m",
        f"gw-{i}\u202eevil\u2028line\x00",
        f"gw-{i}-" + "x" * 500,
    ]
    return forms[i % 3]


def with_hostile_names(partials: dict[str, pa.Table]) -> dict[str, pa.Table]:
    out = {}
    for name, table in partials.items():
        if "node_id" in table.column_names and table.num_rows:
            names = [hostile_name(int(n[1:])) for n in table.column("node_id").to_pylist()]
            index = table.column_names.index("node_id")
            table = table.set_column(index, "node_id", pa.array(names, table.schema.field(index).type))
        out[name] = table
    return out


def is_safe(value: str) -> bool:
    categories = {unicodedata.category(c) for c in value}
    return len(value) <= MAX_LABEL_CHARS and not categories & {"Cc", "Cf", "Zl", "Zp"}


def test_invented_node_names_give_a_bounded_number_of_safe_alerts(
    tmp_path: Path, alert_receiver: AlertReceiver
) -> None:
    now = time.time_ns()
    ingestor = Ingestor(clock=lambda: now, hasher=KeyHasher(b"salt"))
    for i in range(HOSTILE):
        node = f"n{i}"
        for seq in (0, 3):  # two messages lost from each
            beat = {"node": node, "interval_ms": 1000, "timestamp": now}
            ingestor.ingest(message("tyk.heartbeat", [beat], node=node, seq=seq, sent=now), received_ns=now)
    sink = ClickHouseSink(
        ClickHouseSettings(clickhouse_dsn=f"chdb://{tmp_path / 'db'}", clickhouse_database="tykpulse")
    )
    sink.setup()
    try:
        sink.write(with_hostile_names(compute(ingestor.take())), "flood")
        evaluator = Evaluator(
            sink.client,
            [RULES["data_loss"]],
            AlertmanagerClient(alert_receiver.url),
            generator_url="file:///alerts",
        )
        evaluator.evaluate()
    finally:
        sink.close()
    alerts = [alert for _, alert in alert_receiver.alerts()]
    # before: 300 critical alerts in one POST, labels holding the publishers' newlines and escapes
    overflow = [a for a in alerts if a["labels"].get("overflow") == "true"]
    per_node = [a for a in alerts if "node_id" in a["labels"]]
    assert len(per_node) == MAX_SERIES_PER_RULE
    assert len(overflow) == 1
    assert (
        overflow[0]["annotations"]["summary"]
        == f"{HOSTILE - MAX_SERIES_PER_RULE} more data_loss series not sent"
    )
    assert evaluator.readings()["series_omitted"] == HOSTILE - MAX_SERIES_PER_RULE
    for alert in alerts:
        assert all(is_safe(v) for v in alert["labels"].values()), alert["labels"]
        assert all("\n" not in v and "\x1b" not in v for v in alert["annotations"].values())
    names = [a["labels"]["node_id"] for a in per_node]
    assert any("\ufffdseverity: none\ufffd\ufffd[31mFIRING" in n for n in names)  # shown, not obeyed
    assert any(len(n) == MAX_LABEL_CHARS and n.endswith("x\u2026") for n in names)  # cut, and says so
