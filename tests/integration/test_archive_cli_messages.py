"""The archive commands and the alert rules as an operator meets them: from any directory,
with plain messages instead of tracebacks.

- `rebuild` and `replay` on a database no worker archived into say how to get
  an archive (exit 1), not "Unknown table events_raw".
- `alerts check` run from a directory with no alerts/ in it finds the rules
  tykpulse ships.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipelines.alerts.rules import load_rules, shipped_rules
from tests.harness.processes import free_port
from tests.harness.tykpulse import tykpulse

pytestmark = pytest.mark.integration

RANGE = ("--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T01:00:00Z")
REPO_RULES = Path(__file__).parents[2] / "alerts"


def run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tykpulse(*args), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    "command",
    [
        ("rebuild", *RANGE, "--key-hash-salt", "the-workers-key"),
        ("replay", *RANGE, "--publish", "tcp://127.0.0.1:{port}", "--wait-subscribers-s", "0"),
    ],
)
def test_without_an_archive_the_commands_say_to_start_the_worker_with_archive(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    args = [a.format(port=free_port()) for a in command]
    done = run_in(tmp_path, *args, "--clickhouse", f"chdb://{tmp_path / 'db'}")
    assert done.returncode == 1, done.stderr
    assert "archive not enabled: start the worker with --archive" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Unknown table" not in done.stderr


def test_the_shipped_rules_are_the_repository_alerts_and_found_from_any_directory(tmp_path: Path) -> None:
    assert shipped_rules() == REPO_RULES.resolve()  # one copy: the package links to alerts/
    expected = sorted(rule.name for rule in load_rules(REPO_RULES).rules)
    assert expected
    done = run_in(tmp_path, "alerts", "check", "--clickhouse", f"chdb://{tmp_path / 'db'}")
    assert "no rule files" not in done.stdout
    for name in expected:
        assert name in done.stdout, done.stdout
