"""`tykpulse report` writes a self-contained one-page HTML summary of the seeded database."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness.seeded import SeededDatabase
from tests.harness.tykpulse import tykpulse

pytestmark = pytest.mark.integration


def report(seeded: SeededDatabase, out: Path, *args: str) -> str:
    result = subprocess.run(
        tykpulse("report", "--clickhouse", seeded.dsn, "--out", str(out), *args),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out.read_text()


def test_report_has_headline_charts_and_the_storm(seeded_database: SeededDatabase, tmp_path: Path) -> None:
    page = report(seeded_database, tmp_path / "report.html", "--title", "Fleet weekly")
    assert "<title>Fleet weekly</title>" in page
    requests = sum(r["requests"] for r in seeded_database.truth["views"]["traffic_1m"])
    assert f"{requests:,}" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert seeded_database.storm["api_id"] in page
    assert "http://" not in page  # self-contained
    assert "https://" not in page


def test_report_narrows_to_an_api(seeded_database: SeededDatabase, tmp_path: Path) -> None:
    api = seeded_database.storm["api_id"]
    page = report(seeded_database, tmp_path / "api.html", "--api", api, "--hours", "24")
    expected = sum(r["requests"] for r in seeded_database.truth["views"]["traffic_1m"] if r["api_id"] == api)
    assert f"{expected:,}" in page
