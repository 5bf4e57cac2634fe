"""The schema apply attaches again the views it creates or upgrades, and no other (real engine)."""

from __future__ import annotations

from typing import Any

import pytest

from sinks.clickhouse import ddl
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink, apply_schema

pytestmark = pytest.mark.component


class Recording:
    """The client, with every command it runs written down; `hide_views` makes the views look absent."""

    def __init__(self, client: Any, *, hide_views: bool = False) -> None:
        self.client = client
        self.hide_views = hide_views
        self.commands: list[str] = []

    def command(self, sql: str) -> Any:
        self.commands.append(sql)
        return self.client.command(sql)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        if self.hide_views and "MaterializedView" in sql:
            sql += " AND 0"
        return self.client.query(sql, parameters=parameters)

    def detached(self) -> list[str]:
        return [c.removeprefix("DETACH TABLE ") for c in self.commands if c.startswith("DETACH")]


def test_the_creating_apply_attaches_every_view_again_and_later_ones_none(
    clickhouse: ClickHouseSettings,
) -> None:
    sink = ClickHouseSink(clickhouse)
    db = clickhouse.clickhouse_database
    try:
        first = Recording(sink.client)
        apply_schema(first, db)
        assert first.detached() == ddl.materialized_view_names(db)
        assert not [c for c in first.commands if "MODIFY QUERY" in c]  # created current: nothing to upgrade
        again = Recording(sink.client)
        apply_schema(again, db)
        assert again.detached() == []
        assert not [c for c in again.commands if "MODIFY QUERY" in c]
        # another writer created the views between this apply's look and its CREATEs: it leaves them be
        raced = Recording(sink.client, hide_views=True)
        apply_schema(raced, db)
        assert raced.detached() == []
        views = sink.query_rows(
            f"SELECT count() FROM system.tables WHERE database = '{db}' AND engine = 'MaterializedView'"
        )
        assert views == [(len(ddl.materialized_view_names(db)),)]
    finally:
        sink.close()
