"""Rollups on hand-built batches, checked against hand-computed expectations."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from pipelines.firehose.protocol import RejectReason
from pipelines.ingest import Ingestor, ReplayClock
from pipelines.rollups import ROLLUP_FUNCTIONS, compute
from pipelines.windows.batch import Batch
from sinks.clickhouse.contract import TABLES_BY_NAME
from tests.conftest import T0_NS
from tests.helpers import analytics, event, message, notice

pytestmark = pytest.mark.unit
W0 = T0_NS // 10**9  # 10:15:00, a window start
MINUTE = 60 * 10**9


def ingest(messages: list[list[bytes]], now: int = T0_NS + MINUTE) -> tuple[Ingestor, Batch]:
    ingestor = Ingestor(clock=lambda: now)
    for frames in messages:
        ingestor.ingest(frames, received_ns=now)
    return ingestor, ingestor.take()


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: tuple(str(v) for v in r.values()))


def test_every_rollup_produces_exactly_its_input_table_schema() -> None:
    _, batch = ingest([message("tyk.analytics", [analytics(T0_NS)])])
    for name, fn in ROLLUP_FUNCTIONS.items():
        table = fn(batch)
        assert table.column_names == [c.name for c in TABLES_BY_NAME[name].input_columns], name


def test_empty_batch_gives_empty_tables() -> None:
    assert all(t.num_rows == 0 for t in compute(Batch.empty()).values())


def test_traffic_counts_status_classes_per_window_org_api() -> None:
    records = [
        analytics(T0_NS, code=200, latency=10),
        analytics(T0_NS + 1, code=429, latency=1),
        analytics(T0_NS + 2, code=404, latency=5),
        analytics(T0_NS + 3, code=503, latency=100),
        analytics(T0_NS + 4, code=-1, latency=7),  # Tyk TCP stats record: not a request
        analytics(T0_NS + MINUTE, code=200, api="api2"),
    ]
    _, batch = ingest([message("tyk.analytics", records)])
    got = rows(compute(batch)["traffic"])
    assert [
        (r["window_start"], r["api_id"], r["requests"], r["status_4xx"], r["status_429"], r["status_5xx"])
        for r in got
    ] == [(W0, "api1", 4, 2, 1, 1), (W0 + 60, "api2", 1, 0, 0, 0)]
    assert sum(got[0]["latency_counts"]) == 4


def test_rate_limit_hits_count_events_and_distinct_keys() -> None:
    events = [event("RatelimitExceeded", T0_NS, key=k) for k in ("a", "b", "a")]
    quota = [event("QuotaExceeded", T0_NS, key="a")]
    other = [event("AuthFailure", T0_NS, key="z")]
    _, batch = ingest(
        [
            message("tyk.event.RatelimitExceeded", events, seq=0),
            message("tyk.event.QuotaExceeded", quota, seq=1),
            message("tyk.event.AuthFailure", other, seq=2),
        ]
    )
    got = {r["event_type"]: r for r in compute(batch)["rate_limit_hits"].to_pylist()}
    assert set(got) == {"RatelimitExceeded", "QuotaExceeded"}
    assert (got["RatelimitExceeded"]["hits"], len(got["RatelimitExceeded"]["key_hashes"])) == (3, 2)
    assert (got["QuotaExceeded"]["hits"], len(got["QuotaExceeded"]["key_hashes"])) == (1, 1)


def test_token_churn_splits_created_updated_deleted() -> None:
    _, batch = ingest(
        [
            message(
                "tyk.event.TokenCreated",
                [event("TokenCreated", T0_NS, key="a"), event("TokenCreated", T0_NS, key="b")],
            ),
            message("tyk.event.TokenDeleted", [event("TokenDeleted", T0_NS, key="a")], seq=1),
            message("tyk.event.TokenUpdated", [event("TokenUpdated", T0_NS, key="")], seq=2),
        ]
    )
    (row,) = compute(batch)["token_churn"].to_pylist()
    assert (row["created"], row["updated"], row["deleted"], len(row["key_hashes"])) == (2, 1, 1, 2)


def test_raw_keys_never_reach_the_rollups() -> None:
    secret = "org1-very-secret-key"
    _, batch = ingest(
        [message("tyk.event.RatelimitExceeded", [event("RatelimitExceeded", T0_NS, key=secret)])]
    )
    for table in compute(batch).values():
        assert secret not in str(table.to_pylist())


def test_config_changes_are_per_command_and_publishing_node() -> None:
    _, batch = ingest(
        [
            message(
                "tyk.notice.ApiUpdated",
                [notice("ApiUpdated", T0_NS), notice("ApiUpdated", T0_NS)],
                node="dash",
            ),
            message("tyk.notice.PolicyChanged", [notice("PolicyChanged", T0_NS)], node="gw2"),
        ]
    )
    got = {(r["command"], r["node_id"]): r["changes"] for r in compute(batch)["config_changes"].to_pylist()}
    assert got == {("ApiUpdated", "dash"): 2, ("PolicyChanged", "gw2"): 1}


def test_gateway_notices_are_attributed_to_the_gateway_named_in_the_payload() -> None:
    drl = '{"HostName":"gw-host-a","ID":"solo-abc","LoadPerSec":3,"Percentage":0,"TagHash":""}'
    response = '{"FromHostname":"gw-host-b","FromNodeID":"","Configuration":{},"TimeStamp":1}'
    command = "NoticeGatewayDRLNotification"
    _, batch = ingest(
        [
            message(f"tyk.notice.{command}", [notice(command, T0_NS, drl)] * 2, node="bridge"),
            message(f"tyk.notice.{command}", [notice(command, T0_NS, "{not json")], node="bridge", seq=1),
            message(
                "tyk.notice.NoticeGatewayConfigResponse",
                [notice("NoticeGatewayConfigResponse", T0_NS, response)],
                node="bridge",
                seq=2,
            ),
            message("tyk.notice.GroupReload", [notice("GroupReload", T0_NS)], node="bridge", seq=3),
            # a payload naming a node that is not printable text keeps the publisher
            message(
                "tyk.notice.NoticeGatewayConfigResponse",
                [notice("NoticeGatewayConfigResponse", T0_NS, '{"FromNodeID":"gw\\nforged"}')],
                node="bridge",
                seq=4,
            ),
        ]
    )
    got = {(r["command"], r["node_id"]): r["changes"] for r in compute(batch)["config_changes"].to_pylist()}
    assert got == {
        (command, "solo-abc"): 2,  # the gateway's node id (drl.Server.ID)
        (command, "bridge"): 1,  # a payload that does not parse keeps the publisher
        ("NoticeGatewayConfigResponse", "gw-host-b"): 1,  # no node id: the host name
        ("GroupReload", "bridge"): 1,  # no origin in the payload
        ("NoticeGatewayConfigResponse", "bridge"): 1,  # "gw\nforged" names no node
    }


def test_ingest_health_counts_messages_records_losses_and_rejections_by_receive_time() -> None:
    hb = {"node": "gw1", "timestamp": T0_NS, "interval_ms": 1000}
    future = T0_NS + 3 * 24 * 3600 * 10**9
    msgs = [
        message("tyk.analytics", [analytics(T0_NS), analytics(T0_NS)], seq=0),
        message("tyk.heartbeat", [hb], seq=1),
        message("tyk.analytics", [analytics(T0_NS), analytics(future), analytics("not a time")], seq=4),
        message("tyk.analytics", [analytics(T0_NS)], seq=4),  # duplicate
        [b"junk"],
    ]
    ingestor, batch = ingest(msgs)
    partials = compute(batch)
    health = {r["node_id"]: r for r in partials["ingest_health"].to_pylist()}
    assert health["gw1"]["messages"] == 3
    assert health["gw1"]["records"] == 3
    assert health["gw1"]["lost_messages"] == 2
    assert health["gw1"]["rejected"] == 3
    assert health[""]["rejected"] == 1
    reasons = {(r["node_id"], r["reason"]): r["rejected"] for r in partials["ingest_rejections"].to_pylist()}
    assert reasons == {
        ("gw1", RejectReason.FUTURE_TIMESTAMP.value): 1,
        ("gw1", RejectReason.BAD_TIMESTAMP.value): 1,
        ("gw1", RejectReason.DUPLICATE.value): 1,
        ("", RejectReason.FRAME_COUNT.value): 1,
    }
    assert ingestor.stats.rejected_total == 4
    assert ingestor.stats.records == 3
    (row,) = partials["traffic"].to_pylist()
    assert row["requests"] == 3


def test_publishers_rows_keep_the_interval_each_incarnation_promised() -> None:
    # Found by attack: the interval was joined per node, so a heartbeat under another boot of the
    # name set every incarnation's row in the same flush (max() keeps it in `publishers` for good).
    def heartbeat(boot: int, interval_ms: int) -> list[bytes]:
        record = {"node": "gw", "timestamp": T0_NS, "interval_ms": interval_ms}
        return message("tyk.heartbeat", [record], node="gw", boot=boot, seq=0)

    _, batch = ingest([heartbeat(1000, 500), heartbeat(1, 3_600_000), message("tyk.analytics", [], boot=7)])
    got = {r["boot"]: r["interval_ms"] for r in compute(batch)["publishers"].to_pylist()}
    assert got == {1000: 500, 1: 3_600_000, 7: 0}


def test_take_empties_the_buffer() -> None:
    ingestor, batch = ingest([message("tyk.analytics", [analytics(T0_NS)])])
    assert batch.analytics.height == 1
    assert ingestor.take().analytics.height == 0


def test_each_record_is_judged_by_its_own_messages_receive_time() -> None:
    # Found by attack: the batch judged every record by one clock (the latest receive time), so a
    # rebuild whose chunk spanned days accepted records the worker had refused as future, and
    # refused records it had accepted as recent enough.
    day = 24 * 3600 * 10**9
    ingestor = Ingestor(clock=ReplayClock(), max_future_ns=day, max_past_ns=day)
    stamped = T0_NS + 2 * day
    ingestor.ingest_many(
        [message("tyk.analytics", [analytics(stamped)], seq=0)], [T0_NS]
    )  # 2 days ahead: future
    ingestor.ingest_many([message("tyk.analytics", [analytics(T0_NS)], seq=1)], [T0_NS])  # on time
    ingestor.ingest_many(
        [message("tyk.analytics", [analytics(stamped)], seq=2)], [T0_NS + 3 * day]
    )  # 1 day late: ok
    ingestor.ingest_many(
        [message("tyk.analytics", [analytics(T0_NS)], seq=3)], [T0_NS + 3 * day]
    )  # 3 days late: past
    batch = ingestor.take()
    assert batch.records == 2
    assert dict(ingestor.stats.rejected) == {"future_timestamp": 1, "past_timestamp": 1}
