"""The analyst notebooks, executed headless against real-looking databases.

Notebooks hold no assertions: on a quiet day an analyst must read "no storms
in this period", not an AssertionError. The checks live here, run against two
databases: the seeded one (a storm, token waves, config changes, an incident)
and a quiet one (traffic only: no storm, no token event, no config change).
A failing cell fails the test with the cell's traceback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from pipelines.ingest import Ingestor
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.harness.seeded import SeededDatabase
from tests.helpers import analytics, event, message, notice

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
MINUTE = 60 * 10**9


def test_there_are_the_three_stories() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"rate_limits", "token_churn", "config_changes"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs_or_assertions(path: Path) -> None:
    book = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} has outputs"
            assert cell.execution_count is None, f"{path.name} has execution counts"
            assert "assert " not in cell.source, f"{path.name}: checks belong in tests, not in the notebook"
    assert "TYKPULSE_CLICKHOUSE_DSN" in "".join(c.source for c in book.cells)


def run(path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Execute the notebook; all its text and HTML output, in order."""
    monkeypatch.setenv("TYKPULSE_CLICKHOUSE_DSN", dsn)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders PNGs
    book = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(
        book, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return "\n".join(_texts(book))


def _texts(book: Any) -> Iterator[str]:
    for cell in book.cells:
        for output in cell.get("outputs", []):
            yield output.get("text", "")
            data = output.get("data", {})
            yield data.get("text/plain", "") + data.get("text/html", "")


def figures_drawn(text: str) -> int:
    line = next(x for x in text.splitlines() if x.endswith("figures drawn"))
    return int(line.split()[0])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_seeded_database(
    path: Path, seeded_database: SeededDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = run(path, seeded_database.dsn, monkeypatch, tmp_path)
    assert figures_drawn(text) >= 3
    assert "in this period" not in text, "the seeded database has something of every kind"
    if path.stem == "rate_limits":
        assert seeded_database.storm["api_id"] in text  # the storm is found and shown


@pytest.fixture(scope="module")
def quiet_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An hour of plain traffic, written through the real path: no limit hit, token or config change."""
    path = tmp_path_factory.mktemp("quiet") / "db"
    now = time.time_ns()
    ingestor = Ingestor(clock=lambda: now, hasher=KeyHasher(b"salt"))
    for seq, minutes_ago in enumerate(range(60, 0, -1)):
        at = now - minutes_ago * MINUTE
        records = [analytics(at, code=500 if i == 0 else 200) for i in range(100)]
        ingestor.ingest(message("tyk.analytics", records, seq=seq, sent=at), received_ns=at)
    sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=f"chdb://{path}", clickhouse_database="tykpulse"))
    sink.setup()
    sink.write(compute(ingestor.take()), "quiet")
    sink.close()  # the notebook's kernel opens the embedded database next
    return f"chdb://{path}"


HOSTILE_API, HOSTILE_ORG, HOSTILE_COMMAND = "$\\zzz$-x", "$\\yyy$", "$\\www$"


@pytest.fixture(scope="module")
def hostile_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An hour in which every name a chart shows holds matplotlib mathtext (`$\\zzz$`), with a storm."""
    path = tmp_path_factory.mktemp("hostile") / "db"
    now = time.time_ns()
    ingestor = Ingestor(clock=lambda: now, hasher=KeyHasher(b"salt"))
    seq = iter(range(10**6))
    for minutes_ago in range(60, 0, -1):
        at = now - minutes_ago * MINUTE
        traffic = [
            analytics(at, org=HOSTILE_ORG, api=HOSTILE_API, code=500 if i == 0 else 200) for i in range(100)
        ]
        storm = 100 if minutes_ago in (30, 29, 28) else 1
        limited = [
            event("RatelimitExceeded", at, org=HOSTILE_ORG, api=HOSTILE_API, key=f"k{i}")
            for i in range(storm)
        ]
        tokens = [event("TokenCreated", at, org=HOSTILE_ORG, key=f"t{minutes_ago}")]
        changed = minutes_ago % 10 == 0  # a configuration change, and a notice with a hostile command
        batches = [("tyk.analytics", traffic), ("tyk.event.RatelimitExceeded", limited)]
        batches += [
            ("tyk.event.TokenCreated", tokens),
            ("tyk.notice.ApiUpdated", [notice("ApiUpdated", at)] * changed),
        ]
        batches += [(f"tyk.notice.{HOSTILE_COMMAND}", [notice(HOSTILE_COMMAND, at)] * changed)]
        for topic, records in batches:
            if records:
                ingestor.ingest(message(topic, records, seq=next(seq), sent=at), received_ns=at)
    sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=f"chdb://{path}", clickhouse_database="tykpulse"))
    sink.setup()
    sink.write(compute(ingestor.take()), "hostile")
    sink.close()
    return f"chdb://{path}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_draws_names_holding_mathtext(
    path: Path, hostile_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TYKPULSE_CLICKHOUSE_DSN", hostile_dsn)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    book = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(
        book, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [output for cell in book.cells for output in cell.get("outputs", [])]
    text = "\n".join(_texts(book))
    # every figure was rendered to a PNG: a label with `$\\zzz$` made matplotlib raise while drawing
    assert "ParseException" not in text, text[-2000:]
    assert "ValueError" not in text, text[-2000:]
    drawn = sum("image/png" in output.get("data", {}) for output in outputs)
    assert drawn == figures_drawn(text) >= 3


QUIET_SAYS = {
    "rate_limits": ["no storms in this period", "nothing to drill into"],
    "config_changes": ["no configuration changes in this period"],
    "token_churn": ["no token creates or deletes in this period", "no churn spikes in this period"],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_says_so_on_a_quiet_day(
    path: Path, quiet_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = run(path, quiet_dsn, monkeypatch, tmp_path)
    for sentence in QUIET_SAYS.get(path.stem, []):
        assert sentence in text
    assert figures_drawn(text) >= 1
