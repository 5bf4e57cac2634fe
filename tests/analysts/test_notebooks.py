"""The analyst notebooks, executed headless against the seeded worker-served database.

Each notebook ends with its own assertions (frames non-empty, figures drawn);
a failing cell fails the test with the cell's traceback.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.harness.seeded import SeededDatabase

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_the_three_stories() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"rate_limits", "token_churn", "config_changes"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} has outputs"
            assert cell.execution_count is None, f"{path.name} has execution counts"
    assert "TYKPULSE_CLICKHOUSE_DSN" in "".join(c.source for c in book.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless(
    path: Path, seeded_database: SeededDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TYKPULSE_CLICKHOUSE_DSN", seeded_database.dsn)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders PNGs
    book = nbformat.read(path, as_version=4)
    NotebookClient(
        book, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    last = book.cells[-1]
    text = "".join(o.get("text", "") for o in last.outputs)
    assert "figures drawn" in text
    images = [
        o for c in book.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 3
