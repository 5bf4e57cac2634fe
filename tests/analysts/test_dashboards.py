"""Every Grafana dashboard query runs on the engine and returns rows.

Each panel target, annotation and variable query of dashboards/*.json is
expanded as Grafana and the ClickHouse datasource plugin expand it
(tests/analysts/grafana.py), for the seeded time range, with every variable
at All and again narrowed to the storm's org and API, and executed through
the worker's ClickHouse endpoint over the embedded engine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import analyst
from tests.analysts.grafana import TimeRange, apply_conditional_all, expand, interpolate_variables
from tests.harness.seeded import SeededDatabase

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).parents[2] / "dashboards"
BOARDS = sorted(DASHBOARDS.glob("*.json"))
PLUGIN = "grafana-clickhouse-datasource"


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["rawSql"]
    for annotation in board["annotations"]["list"]:
        yield f"annotation {annotation['name']!r}", annotation["target"]["rawSql"]


@pytest.fixture(scope="module")
def client(seeded_database: SeededDatabase) -> Iterator[Any]:
    c = analyst.connect(seeded_database.dsn)
    yield c
    c.close()


@pytest.fixture(scope="module")
def time_range(client: Any) -> TimeRange:
    covered = analyst.data_range(client)
    assert covered is not None
    start = covered[0].to_pydatetime().replace(tzinfo=dt.UTC) - dt.timedelta(minutes=1)
    return TimeRange(start, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1), interval_s=60)


@dataclasses.dataclass
class Selection:
    """Each query variable's values (the first column of its query) and which are at All."""

    values: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    at_all: set[str] = dataclasses.field(default_factory=set)
    texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def expand(self, sql: str, time_range: TimeRange) -> str:
        return expand(sql, self.values, time_range, self.at_all)


def resolve_variables(client: Any, board: dict[str, Any], fixed: dict[str, list[str]]) -> Selection:
    """Query variables in dashboard order, later ones seeing earlier ones; unfixed ones at All.

    As the plugin does: a query of two columns gives each option's value (first) and text.
    """
    selection = Selection()
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        sql = interpolate_variables(
            apply_conditional_all(variable["query"], selection.at_all), selection.values
        )
        rows = client.query(sql).result_rows
        options = [str(row[0]) for row in rows]
        assert options, f"variable {variable['name']} has no values"
        selection.texts[variable["name"]] = [str(row[-1]) for row in rows]
        if variable["name"] in fixed:
            selection.values[variable["name"]] = fixed[variable["name"]]
        else:
            selection.values[variable["name"]] = options
            selection.at_all.add(variable["name"])
    return selection


def option_value(text: str) -> str:
    """The value the org and api variables give the option showing `text` (its bytes in hex)."""
    return text.encode().hex().upper()


def test_there_are_the_five_dashboards() -> None:
    assert {p.stem for p in BOARDS} == {
        "overview",
        "rate_limits",
        "tokens",
        "config_changes",
        "ingest_health",
    }


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_dashboard_is_wired_to_the_clickhouse_plugin(path: Path) -> None:
    board = load(path)
    assert board["uid"].startswith("tykpulse-")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 3
    for panel in board["panels"]:
        assert panel["datasource"]["type"] == PLUGIN
        for target in panel["targets"]:
            assert target["datasource"]["type"] == PLUGIN
            assert target["editorType"] == "sql"
            assert target["queryType"] in ("timeseries", "table")
            assert target["format"] == (0 if target["queryType"] == "timeseries" else 1)


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
@pytest.mark.parametrize("selection", ["all", "storm"])
def test_every_query_returns_rows(
    path: Path, selection: str, client: Any, time_range: TimeRange, seeded_database: SeededDatabase
) -> None:
    board = load(path)
    storm = seeded_database.storm
    fixed = (
        {"org": [option_value(storm["org_id"])], "api": [option_value(storm["api_id"])]}
        if selection == "storm"
        else {}
    )
    variables = resolve_variables(client, board, fixed)
    for name, sql in queries(board):
        expanded = variables.expand(sql, time_range)
        assert "$" not in expanded, f"{name}: unexpanded {expanded}"
        result = client.query(expanded)
        assert result.result_rows, f"{path.stem} {name} returned no rows:\n{expanded}"


def test_time_series_panels_return_a_time_column_first(client: Any, time_range: TimeRange) -> None:
    for path in BOARDS:
        board = load(path)
        variables = resolve_variables(client, board, {})
        for panel in board["panels"]:
            for target in panel["targets"]:
                if target["queryType"] != "timeseries":
                    continue
                result = client.query(variables.expand(target["rawSql"], time_range))
                assert result.column_names[0] == "time", f"{path.stem} {panel['title']}"


def test_provisioning_points_at_the_dashboards_and_the_endpoint() -> None:
    provisioning = DASHBOARDS / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "tykpulse.yaml").read_text())["datasources"][
        0
    ]
    assert datasource["type"] == PLUGIN
    assert datasource["uid"] == "tykpulse-clickhouse"
    assert datasource["jsonData"]["protocol"] == "http"
    provider = yaml.safe_load((provisioning / "dashboards" / "tykpulse.yaml").read_text())["providers"][0]
    assert provider["type"] == "file"
    for path in BOARDS:
        variable = load(path)["templating"]["list"][0]
        assert variable["current"]["value"] == datasource["uid"]
