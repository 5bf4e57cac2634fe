"""Which materialized views a schema apply replaces the query of, and attaches again."""

from __future__ import annotations

import pytest

from sinks.clickhouse import ddl
from sinks.clickhouse.contract import INGEST_HEALTH

pytestmark = pytest.mark.unit

CURRENT = (
    "SELECT toStartOfMinute(window_start) AS window_start, node_id, sum(messages) AS messages, "
    "sum(records) AS records, sum(lost_messages) AS lost_messages, sum(rejected) AS rejected, "
    "sumMap(mapFromArrays(delivery_buckets, delivery_counts)) AS delivery_hist, "
    "sum(delivery_negative) AS delivery_negative, sum(rejected_messages) AS rejected_messages, "
    "sum(goodbyes) AS goodbyes FROM tykpulse.ingest_health_in GROUP BY window_start, node_id"
)


def test_every_upgrade_statement_names_its_view_and_no_other_statement_does() -> None:
    views = ddl.materialized_view_names()
    modified = [ddl.modified_view(s) for s in ddl.schema_statements()]
    named = [v for v in modified if v is not None]
    assert named == ["tykpulse.ingest_health_1m_mv", "tykpulse.ingest_health_1h_mv", "tykpulse.publishers_mv"]
    assert set(named) <= set(views)
    cluster = ddl.ClusterLayout("c1")
    assert [ddl.modified_view(s) for s in ddl.upgrade_view(INGEST_HEALTH, "1m", "db", cluster)] == [
        "db.ingest_health_1m_mv"
    ]


def test_a_view_is_current_when_its_query_folds_every_measure() -> None:
    assert ddl.view_is_current("tykpulse.ingest_health_1m_mv", CURRENT)
    assert ddl.view_is_current(
        "tykpulse.ingest_health_1m_mv", CURRENT.replace(" AS ", " AS `").replace(", ", "`, ")
    )
    older = CURRENT.replace(", sum(goodbyes) AS goodbyes", "")
    assert not ddl.view_is_current("tykpulse.ingest_health_1m_mv", older)
    assert not ddl.view_is_current("tykpulse.not_ours_mv", CURRENT)


def test_views_are_attached_again_one_by_one() -> None:
    assert ddl.reattach_statements(["d.a_mv", "d.b_mv"]) == [
        "DETACH TABLE d.a_mv",
        "ATTACH TABLE d.a_mv",
        "DETACH TABLE d.b_mv",
        "ATTACH TABLE d.b_mv",
    ]


def test_every_view_is_created_by_one_statement_that_names_it() -> None:
    for layout in (None, ddl.ClusterLayout("c1")):
        created = [ddl.created_view(s) for s in ddl.schema_statements("db", layout)]
        assert [v for v in created if v is not None] == ddl.materialized_view_names("db")
