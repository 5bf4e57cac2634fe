"""`tykpulse alerts check` and `alerts run --once` against the seeded worker-served database."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.alert_receiver import AlertReceiver, parse_time
from tests.harness.seeded import GAPPY_NODE, SeededDatabase
from tests.harness.tykpulse import tykpulse as command

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).parents[2] / "alerts"


def tykpulse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=180, check=False)


def test_check_runs_every_shipped_rule(seeded_database: SeededDatabase) -> None:
    result = tykpulse("alerts", "check", "--rules", str(SHIPPED), "--clickhouse", seeded_database.dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" OK ") == 7
    assert "ERROR" not in result.stdout


def test_check_reports_broken_rules_instead_of_crashing(
    seeded_database: SeededDatabase, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(SHIPPED, rules)
    (rules / "broken_sql.yaml").write_text(
        "name: broken_sql\nseverity: info\nsql: SELEC nothing FROM nowhere\n"
    )
    (rules / "unknown_table.yaml").write_text(
        "name: unknown_table\nseverity: info\nsql: SELECT * FROM tykpulse.nope\n"
    )
    (rules / "not_a_rule.yaml").write_text("name: [\n")
    result = tykpulse("alerts", "check", "--rules", str(rules), "--clickhouse", seeded_database.dsn)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "Code: 62." in lines["broken_sql"]
    assert "Code: 60." in lines["unknown_table"]
    assert "SYNTAX_ERROR" in result.stdout
    assert "UNKNOWN_TABLE" in result.stdout
    assert "INVALID" in result.stdout
    assert "not_a_rule.yaml" in result.stdout
    assert sum(" OK " in line for line in lines.values()) == 7


def test_run_once_posts_the_data_loss_alert(
    seeded_database: SeededDatabase, alert_receiver: AlertReceiver
) -> None:
    result = tykpulse(
        "alerts", "run", "--once", "--rules", str(SHIPPED), "--clickhouse", seeded_database.dsn,
        "--webhook", alert_receiver.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    paths = {path for path, _, _ in alert_receiver.posts}
    assert paths == {"/api/v2/alerts"}
    alert = next(a for _, a in alert_receiver.alerts() if a["labels"]["alertname"] == "data_loss")
    assert alert["labels"] == {
        "alertname": "data_loss",
        "severity": "critical",
        "team": "platform",
        "node_id": GAPPY_NODE,
    }
    assert alert["annotations"]["summary"] == f"2 messages lost from {GAPPY_NODE}"
    assert parse_time(alert["startsAt"]) < parse_time(alert["endsAt"])
    assert alert["generatorURL"].endswith("#data_loss")
