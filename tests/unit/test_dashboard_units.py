"""Every series a time-series panel draws is shown in the unit its name says.

A panel's `defaults.unit` applies to all its series unless an override names
one: a latency drawn in a panel whose unit is `percentunit` read 1.65 s as 165 %.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

DASHBOARDS = Path(__file__).parents[2] / "dashboards"
# what a column's name says it holds -> the Grafana unit that shows it so
UNIT_OF_NAME = (
    (re.compile(r"_seconds$"), "s"),
    (re.compile(r"_ms$"), "ms"),
    (re.compile(r"^rate_\d"), "percentunit"),
)
_ALIAS = re.compile(r"\bAS (\w+)")


def series_panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] == "timeseries":
                yield f"{path.stem}: {panel['title']}", panel


def outer_columns(sql: str) -> list[str]:
    """The aliases of the outermost SELECT (the text before its top-level FROM)."""
    depth = 0
    for match in re.finditer(r"[()]|\bFROM\b", sql):
        token = match.group(0)
        depth += {"(": 1, ")": -1}.get(token, 0)
        if token == "FROM" and depth == 0:
            return _ALIAS.findall(sql[: match.start()])
    return _ALIAS.findall(sql)


def unit_of(panel: dict[str, Any], field: str) -> str | None:
    config = panel.get("fieldConfig", {})
    unit: str | None = config.get("defaults", {}).get("unit")
    for override in config.get("overrides", []):
        if override["matcher"] == {"id": "byName", "options": field}:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    unit = prop["value"]
    return unit


@pytest.mark.parametrize(("name", "panel"), list(series_panels()))
def test_series_are_shown_in_the_unit_their_name_says(name: str, panel: dict[str, Any]) -> None:
    for target in panel["targets"]:
        for column in outer_columns(target["rawSql"]):
            for pattern, unit in UNIT_OF_NAME:
                if pattern.search(column):
                    assert unit_of(panel, column) == unit, (name, column)
