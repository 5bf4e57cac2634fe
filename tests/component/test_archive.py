"""The raw-event archive on the real engine: keys hashed, exactly once, and rebuild replaces a range.

A workload spanning three hours goes through the durable flusher with the
archive on. The rebuild tests then damage the stored rollups (a range counted
twice, a window lost) and check that `rebuild` restores exactly what the live
path wrote, inside the range only.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from pipelines.archive.output import EventsArchiveOutput
from pipelines.archive.rebuild import EVENT_TIME_ROLLUPS, Rebuilder, RebuildError
from pipelines.archive.replay import Replayer
from pipelines.archive.sanitize import ArchivedKeyHasher, hashed_key
from pipelines.archive.timerange import TimeRange
from pipelines.bridges.publishing import BridgePublisher, Sent
from pipelines.delivery import RetryPolicy
from pipelines.firehose.timestamps import to_ns
from pipelines.keys import KeyHasher
from pipelines.security.notices import NoticeVerifier, sign_sha256
from pipelines.settings import FirehoseSettings, WalSettings, WorkerSettings
from pipelines.simulate.verify import fetch_view
from pipelines.wal.build import build_flusher
from pipelines.wal.flusher import DurableFlusher
from sinks.clickhouse.archive import ARCHIVE_TABLE, ArchiveMissingError, EventsArchive
from sinks.clickhouse.sink import ClickHouseSink, translate
from sinks.errors import SinkError
from tests.component.test_wal_flusher import drain
from tests.helpers import analytics, event, message, notice, timestamp_ext
from tests.sink_faults import Fault, FaultySink

pytestmark = pytest.mark.component

SALT = "archive-salt"
HOUR_NS = 3600 * 10**9
MINUTE_NS = 60 * 10**9
RAW = "rawkey"  # every raw key and credential in the workload contains this


def first_hour_ns() -> int:
    now = time.time_ns()
    return now - now % HOUR_NS - 5 * HOUR_NS


def workload(h0: int) -> list[list[bytes]]:
    """Three hours of analytics, rate-limit events, notices and a heartbeat, from two nodes."""
    out = []
    seq = {"gw1": 0, "gw2": 0}

    def add(node: str, topic: str, records: list[Any]) -> None:
        out.append(message(topic, records, node=node, seq=seq[node]))
        seq[node] += 1

    for i in range(90):
        node = "gw1" if i % 3 else "gw2"
        ts = h0 + (i * 2) * MINUTE_NS + i * 1_000
        late = ts - 50 * MINUTE_NS if i % 11 == 0 else ts
        records = [
            analytics(
                late + j,
                api=f"api{j % 3}",
                code=(200, 429, 500)[j % 3],
                key=f"{RAW}-{(i + j) % 17}",
                latency=1 + (i * j) % 900,
                raw_request=f"R0VUIC8gSFRUUC8xLjEKQXV0aG9yaXphdGlvbjoge{RAW}",
                tags=[f"key-{RAW}-{j}", "org-org1"],
            )
            for j in range(5)
        ]
        add(node, "tyk.analytics", records)
        limits = [event("RatelimitExceeded", ts, key=f"{RAW}-{(i * 7 + j) % 23}") for j in range(3)]
        add(node, "tyk.event.RatelimitExceeded", limits)
        if i % 10 == 0:
            add(
                "gw2",
                "tyk.notice.KeySpaceUpdateNotification",
                [notice("KeySpaceUpdateNotification", ts, f"{RAW}-1,{RAW}-2")],
            )
            add("gw2", "tyk.notice.ApiUpdated", [notice("ApiUpdated", ts, "api1")])
            add("gw1", "tyk.heartbeat", [{"node": "gw1", "timestamp": ts, "interval_ms": 1000}])
    return out


def archiving_flusher(
    sink: ClickHouseSink, wal_dir: Path, notices: NoticeVerifier | None = None
) -> DurableFlusher:
    worker = WorkerSettings(key_hash_salt=SecretStr(SALT))
    wal = WalSettings(wal_dir=str(wal_dir), sink_retry_initial_s=0.01, wal_flush_max_bytes=20_000)
    archive = EventsArchiveOutput(sink, KeyHasher(SALT.encode()), ttl_days=7, notices=notices)
    flusher = build_flusher(
        FirehoseSettings(), worker, wal, sink, directory=wal_dir, archive=archive, notice_check=notices
    )
    flusher.open()
    return flusher


def archive_messages(
    sink: ClickHouseSink,
    wal_dir: Path,
    messages: Iterable[tuple[list[bytes], int]],
    notices: NoticeVerifier | None = None,
) -> None:
    """Log `messages` (frames, receive time) with the archive on and flush every one of them."""
    flusher = archiving_flusher(sink, wal_dir, notices)
    try:
        for frames, received in messages:
            assert flusher.writer.append(frames, received)
        flusher.writer.commit()
        drain(flusher)
    finally:
        flusher.close()


@pytest.fixture
def archived(sink: ClickHouseSink, tmp_path: Path) -> dict[str, Any]:
    """The workload written with the archive on; returns the first hour and the views as written."""
    h0 = first_hour_ns()
    messages = workload(h0)
    # Received when they were sent (hours ago), as a worker archiving all along would have.
    step = 3 * HOUR_NS // len(messages)
    archive_messages(sink, tmp_path / "wal", ((frames, h0 + k * step) for k, frames in enumerate(messages)))
    return {"h0": h0, "messages": messages, "views": views(sink)}


def views(sink: ClickHouseSink) -> dict[str, list[dict[str, Any]]]:
    names = [f"{r}_{g}" for r in EVENT_TIME_ROLLUPS for g in ("1m", "1h")]
    return {v: sorted(fetch_view(sink.client, sink.database, v), key=repr) for v in names}


def in_hour(rows: list[dict[str, Any]], hour_s: int, *, inside: bool = True) -> list[dict[str, Any]]:
    return [r for r in rows if (hour_s <= r["window_start"] < hour_s + 3600) == inside]


def test_the_archive_holds_every_message_once_without_a_raw_key(
    sink: ClickHouseSink, archived: dict[str, Any]
) -> None:
    table = f"{sink.database}.{ARCHIVE_TABLE}"
    heartbeats = sum(1 for m in archived["messages"] if m[0] == b"tyk.heartbeat")
    assert sink.query_rows(f"SELECT count(), uniqExact(node, boot, seq) FROM {table}") == [
        (len(archived["messages"]) - heartbeats, len(archived["messages"]) - heartbeats)
    ]
    rows = sink.client.query(f"SELECT payload FROM {table}", column_formats={"payload": "bytes"}).result_rows
    assert rows
    for (payload,) in rows:
        assert RAW.encode() not in payload
    hasher = KeyHasher(SALT.encode())
    records = [r for (payload,) in rows for r in msgspec.msgpack.decode(payload)]
    analytics_records = [r for r in records if "response_code" in r]
    assert all("raw_request" not in r for r in analytics_records)
    assert {r["api_key"] for r in analytics_records} == {hashed_key(hasher, f"{RAW}-{k}") for k in range(17)}
    assert {t for r in analytics_records for t in r["tags"]} >= {
        f"key-{hashed_key(hasher, f'{RAW}-0')}",
        "org-org1",
    }
    keyspace = [r for r in records if r.get("command") == "KeySpaceUpdateNotification"]
    assert keyspace
    assert all(r["payload"].count("h:") == 2 and r["signature"] == "" for r in keyspace)
    ttl = sink.query_rows(
        f"SELECT engine_full FROM system.tables "
        f"WHERE database = '{sink.database}' AND name = '{ARCHIVE_TABLE}'"
    )
    assert "TTL toDateTime(received) + toIntervalDay(7)" in ttl[0][0]


def test_credentials_under_any_name_or_depth_never_reach_the_archive_and_deep_nesting_is_skipped(
    sink: ClickHouseSink, tmp_path: Path
) -> None:
    # Found by attack: the archive keeps every message whose payload decodes, rejected records too,
    # and credentials were removed from the protocol's field names only, so a record in Tyk's Go
    # names (`APIKey`, `RawRequest`) was stored with its raw key; and a payload nested past the
    # recursion limit (rejected by the ingestor) raised RecursionError out of the archive's flush.
    now = time.time_ns()
    bearer = f"GET / HTTP/1.1\r\nAuthorization: Bearer {RAW}-1\r\nCookie: s={RAW}-2\r\n\r\n"
    go_names = {"TimeStamp": [now // 10**9, 0], "OrgID": "org1", "APIID": "api1", "ResponseCode": 200}
    go_names |= {"APIKey": f"{RAW}-3", "RawRequest": bearer, "RawResponse": bearer, "KeyID": f"{RAW}-4"}
    spelled = analytics(now, key=f"{RAW}-5") | {"Api-Key": f"{RAW}-6", "ACCESS_TOKEN": f"{RAW}-7"}
    spelled["meta"] = {"headers": [{"Authorization": f"Basic {RAW}-8"}], "client.secret": f"{RAW}-9"}
    spelled["deep"] = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": {"m": {
        "n": {"o": {"p": {"q": {"password": f"{RAW}-10"}}}}}}}}}}}}}}}}}}  # fmt: skip
    failure = event("AuthFailure", now, key=f"{RAW}-11") | {
        "OriginatingRequest": "R0VUIC8gSFRUUC8xLjEKQXV0aG9yaXphdGlvbjog" + RAW,
        "Token": f"{RAW}-12",
        "Message": "Auth Failure",
    }
    deep = [b"tyk.analytics", message("tyk.analytics", [], node="gw3", seq=0)[1], b"\x91" * 5000 + b"\xc0"]
    messages = [
        message("tyk.analytics", [go_names], node="gw1", seq=0),
        message("tyk.analytics", [spelled], node="gw1", seq=1),
        message("tyk.event.AuthFailure", [failure], node="gw2", seq=0),
        deep,
    ]
    archive_messages(sink, tmp_path / "wal", ((frames, now) for frames in messages))
    table = f"{sink.database}.{ARCHIVE_TABLE}"
    rows = sink.client.query(
        f"SELECT node, payload FROM {table} ORDER BY node", column_formats={"payload": "bytes"}
    ).result_rows
    assert [node for node, _ in rows] == ["gw1", "gw1", "gw2"]  # the deep one skipped, not a crash
    for _, payload in rows:
        assert RAW.encode() not in payload
    hasher = KeyHasher(SALT.encode())
    records = {node + str(i): msgspec.msgpack.decode(p)[0] for i, (node, p) in enumerate(rows)}
    go, kept, auth = records["gw10"], records["gw11"], records["gw22"]
    assert go["APIKey"] == hashed_key(hasher, f"{RAW}-3")
    assert go["OrgID"] == "org1"
    assert "RawRequest" not in go
    assert "RawResponse" not in go
    assert kept["api_key"] == hashed_key(hasher, f"{RAW}-5")
    assert kept["org_id"] == "org1"
    assert kept["meta"]["headers"] == [{}]
    assert auth["key"] == hashed_key(hasher, f"{RAW}-11")
    assert "OriginatingRequest" not in auth
    assert auth["Message"] == "Auth Failure"


def test_a_payload_of_more_maps_than_records_hold_is_neither_built_nor_archived(
    sink: ClickHouseSink, tmp_path: Path
) -> None:
    # Found by attack: the archive built every accepted message whole, fields the ingestor skips
    # included, so a valid record with an unknown field of 16 M empty maps (one byte each) took a
    # worker 2.8 GB and 16 s in its flush, and the archive kept it.
    now = time.time_ns()
    marker = "\x00bomb"
    maps = 1 << 20
    bomb = message("tyk.analytics", [analytics(now) | {"x": marker}], node="gw2")
    bomb[2] = bomb[2].replace(
        msgspec.msgpack.encode(marker), b"\xdd" + maps.to_bytes(4, "big") + b"\x80" * maps
    )
    flusher = archiving_flusher(sink, tmp_path / "wal")
    for frames in (message("tyk.analytics", [analytics(now)], node="gw1"), bomb):
        assert flusher.writer.append(frames, now)
    flusher.writer.commit()
    tracemalloc.start()
    try:
        drain(flusher)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        flusher.close()
    nodes = sink.query_rows(f"SELECT node FROM {sink.database}.{ARCHIVE_TABLE} ORDER BY node")
    assert nodes == [("gw1",)]
    assert peak < 16 << 20


def test_a_notice_rejected_for_its_signature_is_not_archived(sink: ClickHouseSink, tmp_path: Path) -> None:
    # The archive's copy cannot be verified again (a KeySpaceUpdateNotification's signature is
    # blanked with its keys), so `rebuild` and `replay` trust it: a forged notice must not be in it.
    now, secret = time.time_ns(), "node-secret"

    def signed(command: str, payload: str, signature: str | None = None) -> dict[str, Any]:
        return notice(command, now, payload) | {
            "signature": signature or sign_sha256(command, payload, secret)
        }

    keys = f"{RAW}-1,{RAW}-2"
    messages = [
        message(
            "tyk.notice.ApiUpdated", [signed("ApiUpdated", "api1"), signed("ApiUpdated", "api2", "0" * 64)]
        ),
        message("tyk.notice.KeySpaceUpdateNotification", [signed("KeySpaceUpdateNotification", keys)], seq=1),
        message("tyk.notice.PolicyChanged", [signed("PolicyChanged", "p", "forged")], seq=2),
    ]
    archive_messages(sink, tmp_path / "wal", ((frames, now) for frames in messages), NoticeVerifier(secret))
    rows = sink.client.query(
        f"SELECT seq, records, payload FROM {sink.database}.{ARCHIVE_TABLE} ORDER BY seq",
        column_formats={"payload": "bytes"},
    ).result_rows
    archived = [(seq, count, [r["payload"] for r in msgspec.msgpack.decode(p)]) for seq, count, p in rows]
    hasher = KeyHasher(SALT.encode())
    hashed = ",".join(hashed_key(hasher, k) for k in keys.split(","))
    assert archived == [(0, 1, ["api1"]), (1, 1, [hashed]), (2, 0, [])]
    counted = sink.query_rows(f"SELECT sum(changes) FROM {sink.database}.config_changes_1m")
    assert counted == [(2,)]  # what the worker kept is what the archive holds


def test_archived_keys_read_back_as_the_hashes_the_rollups_used() -> None:
    live = KeyHasher(b"s")
    archived = ArchivedKeyHasher(b"s")
    for key in ("abc", "ey1234", "h:not-hex-000000", "h:0123"):
        assert archived.hash(hashed_key(live, key)) == live.hash(key)
    assert archived.hash("plain") == live.hash("plain")


def test_writing_the_same_archive_flush_twice_lands_once(
    sink: ClickHouseSink, archived: dict[str, Any]
) -> None:
    archive = EventsArchive(sink)
    table = f"{sink.database}.{ARCHIVE_TABLE}"
    before = sink.query_rows(f"SELECT count() FROM {table}")[0][0]
    output = EventsArchiveOutput(sink, KeyHasher(SALT.encode()))
    from pipelines.wal.format import WalRecord

    rows = output.build([WalRecord(0, time.time_ns(), archived["messages"][0], 0)], [True])
    assert archive.write(rows, "same-token") == 1
    assert archive.write(rows, "same-token") == 1
    assert sink.query_rows(f"SELECT count() FROM {table}")[0][0] == before + 1


def rebuild(sink: ClickHouseSink, start_ns: int, end_ns: int, *, force: bool = False) -> Any:
    worker = WorkerSettings(key_hash_salt=SecretStr(SALT))
    rebuilder = Rebuilder(sink, EventsArchive(sink), FirehoseSettings(), worker)
    return rebuilder.run(TimeRange(start_ns, end_ns), force=force)


def test_rebuild_replaces_a_range_counted_twice_and_nothing_outside_it(
    sink: ClickHouseSink, archived: dict[str, Any], tmp_path: Path
) -> None:
    h0 = archived["h0"]
    # Damage: every hour counted twice (the whole workload written again under new tokens).
    flusher = archiving_flusher(sink, tmp_path / "other-wal")
    for frames in archived["messages"]:
        flusher.append(frames)
    flusher.received()
    drain(flusher)
    flusher.close()
    damaged = views(sink)
    assert damaged != archived["views"]

    summary = rebuild(sink, h0 + HOUR_NS + 5 * MINUTE_NS, h0 + HOUR_NS + 10 * MINUTE_NS)
    assert (summary.from_s, summary.to_s) == ((h0 + HOUR_NS) // 10**9, (h0 + 2 * HOUR_NS) // 10**9)
    after = views(sink)
    middle = (h0 + HOUR_NS) // 10**9
    for view, rows in after.items():
        original = archived["views"][view]
        assert in_hour(rows, middle) == in_hour(original, middle), view
        assert in_hour(rows, middle, inside=False) == in_hour(damaged[view], middle, inside=False), view
        if not view.startswith("token_churn"):  # the workload has no token events
            assert in_hour(rows, middle), view
            assert in_hour(rows, middle, inside=False) != in_hour(original, middle, inside=False), view
    requests = sink.query_rows(
        f"SELECT sum(requests) FROM {sink.database}.traffic_1h WHERE window_start = toDateTime({middle})"
    )[0][0]
    sent = sum(
        1
        for m in archived["messages"]
        if m[0] == b"tyk.analytics"
        for r in msgspec.msgpack.decode(m[2])
        if middle <= r["timestamp"] // 10**9 < middle + 3600
    )
    assert requests == sent


def test_rebuild_restores_lost_windows_over_the_whole_archive(
    sink: ClickHouseSink, archived: dict[str, Any]
) -> None:
    h0 = archived["h0"]
    for name in EVENT_TIME_ROLLUPS:
        sink.client.command(f"TRUNCATE TABLE {sink.database}.{name}_1m_state")
    # Late records reach back into the hour before the archive's first receive time:
    # the coverage check cannot know the archive holds that hour whole, hence force.
    rebuild(sink, h0 - HOUR_NS, h0 + 3 * HOUR_NS, force=True)
    assert views(sink) == archived["views"]


def test_rebuild_retries_inserts_a_reader_cancels_after_the_delete(
    sink: ClickHouseSink, archived: dict[str, Any]
) -> None:
    """A KILL QUERY between delete and insert must not leave the range empty, nor count it twice."""
    h0 = archived["h0"]

    def cancelled() -> SinkError:
        msg = "Code: 394. DB::Exception: Query was cancelled. (QUERY_WAS_CANCELLED)"
        return translate(DatabaseError(msg, code=394, name="QUERY_WAS_CANCELLED"), "insert")

    faulty = FaultySink(
        sink,
        Fault(lambda n, _: n in (1, 3, 4), cancelled),
        Fault(lambda n, _: n == 2, cancelled, after_write=True),
    )
    worker = WorkerSettings(key_hash_salt=SecretStr(SALT))
    retry = RetryPolicy(initial_s=0.01, max_s=0.02)
    rebuilder = Rebuilder(faulty, EventsArchive(sink), FirehoseSettings(), worker, retry=retry)  # type: ignore[arg-type]
    for name in EVENT_TIME_ROLLUPS:
        sink.client.command(f"TRUNCATE TABLE {sink.database}.{name}_1m_state")
    rebuilder.run(TimeRange(h0 - HOUR_NS, h0 + 3 * HOUR_NS), force=True)
    assert [outcome for _, _, outcome in faulty.calls][:5] == [
        "failed",
        "landed, ack lost",
        "failed",
        "failed",
        "ok",
    ]
    assert views(sink) == archived["views"]


def test_rebuild_refuses_a_range_the_archive_does_not_cover(
    sink: ClickHouseSink, archived: dict[str, Any]
) -> None:
    long_before = archived["h0"] - 48 * HOUR_NS
    with pytest.raises(RebuildError, match="archive starts at"):
        rebuild(sink, long_before, archived["h0"])
    assert views(sink) == archived["views"]
    summary = rebuild(sink, long_before, long_before + HOUR_NS, force=True)
    assert summary.messages == 0
    assert views(sink) == archived["views"]


def test_rebuild_of_an_empty_archive_is_an_error(sink: ClickHouseSink) -> None:
    EventsArchive(sink).setup()
    with pytest.raises(RebuildError, match="archive is empty"):
        rebuild(sink, first_hour_ns(), first_hour_ns() + HOUR_NS)


class RecordedProgress:
    def __init__(self) -> None:
        self.phases: list[tuple[str, int | None]] = []
        self.done: list[int] = []

    def phase(self, description: str, total: int | None = None) -> None:
        self.phases.append((description, total))
        self.done.append(0)

    def advance(self, units: int = 1) -> None:
        self.done[-1] += units


def test_rebuild_reports_progress_and_no_false_sequence_gap(
    sink: ClickHouseSink, archived: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Heartbeats take seqs but are not archived: the archive's seqs have holes that are no loss."""
    h0 = archived["h0"]
    progress = RecordedProgress()
    worker = WorkerSettings(key_hash_salt=SecretStr(SALT))
    rebuilder = Rebuilder(sink, EventsArchive(sink), FirehoseSettings(), worker, progress=progress)
    with caplog.at_level("INFO"):
        summary = rebuilder.run(TimeRange(h0 - HOUR_NS, h0 + 3 * HOUR_NS), force=True)
    assert "sequence gap" not in caplog.text
    assert views(sink) == archived["views"]
    reading, deleting, inserting = progress.phases
    assert reading == ("reading the archive (messages)", summary.messages)
    assert progress.done[0] == summary.messages > 0
    assert deleting[1] is None
    assert inserting[1] == progress.done[2] == 3  # the workload has no token events


def test_reading_an_archive_no_worker_wrote_says_how_to_get_one(sink: ClickHouseSink) -> None:
    with pytest.raises(ArchiveMissingError, match=r"archive not enabled: start the worker with --archive"):
        rebuild(sink, first_hour_ns(), first_hour_ns() + HOUR_NS)


def test_what_the_worker_refused_is_not_archived_so_a_rebuild_counts_what_the_worker_counted(
    sink: ClickHouseSink, tmp_path: Path
) -> None:
    # Found by attack: the archive kept every message that decoded, so `rebuild` and `replay`
    # counted a message refused for a lying count, and a duplicate seq whose first copy was read
    # in another range: 5 + 7 records the worker never counted.
    h0 = first_hour_ns()
    second_hour = h0 + HOUR_NS + 10 * MINUTE_NS

    def records(n: int, at: int, api: str) -> list[dict[str, Any]]:
        return [analytics(at + j, api=api) for j in range(n)]

    sent = [
        message("tyk.analytics", records(4, second_hour, "good"), node="gw", seq=0),
        message("tyk.analytics", records(5, second_hour, "liar"), node="gw", seq=1, count=3),
        message("tyk.analytics", records(4, second_hour, "good"), node="gw", seq=2),
        # seq 2 again, its records an hour earlier: a rebuild of that hour alone never read seq 2
        message("tyk.analytics", records(7, h0 + 5 * MINUTE_NS, "dup"), node="gw", seq=2),
        message("tyk.analytics", records(3, second_hour, "bad-node"), node="gw\n"),
    ]
    archive_messages(
        sink, tmp_path / "wal", ((frames, second_hour + k * 1000) for k, frames in enumerate(sent))
    )
    table = f"{sink.database}.{ARCHIVE_TABLE}"
    assert sink.query_rows(f"SELECT seq, records FROM {table} ORDER BY seq") == [(0, 4), (2, 4)]

    def requests_by_api() -> dict[str, int]:
        rows = fetch_view(sink.client, sink.database, "traffic_1m")
        out: dict[str, int] = {}
        for row in rows:
            out[row["api_id"]] = out.get(row["api_id"], 0) + row["requests"]
        return out

    assert requests_by_api() == {"good": 8}
    rebuild(sink, h0, h0 + HOUR_NS, force=True)  # the hour the duplicate claimed
    rebuild(sink, h0, h0 + 3 * HOUR_NS, force=True)
    assert requests_by_api() == {"good": 8}


class CapturingBridge:
    """Stands in for the replay's ZeroMQ side: what it would publish, per node."""

    def __init__(self) -> None:
        self.nodes: dict[str, None] = {}
        self.publisher = self
        self.sent: list[tuple[str, str | None, list[dict[str, Any]]]] = []

    def add_node(self, node: str) -> None:
        self.nodes[node] = None

    def publish(
        self, topic: str, records: list[dict[str, Any]], stop: Any, *, node: str | None = None
    ) -> Sent:
        self.sent.append((topic, node, list(records)))
        return Sent(len(records), 0, stopped=False)

    def maybe_heartbeat(self) -> None:
        pass


def test_replay_resends_only_the_records_the_worker_counted(sink: ClickHouseSink, tmp_path: Path) -> None:
    # Found by attack: the archive keeps a message's records whole, and replay resent a record the
    # worker had refused as stamped 24 h + 2 s ahead of its receipt; the receiving worker judged it
    # against its own, later receipt, and counted it.
    received = first_hour_ns()
    day = 24 * HOUR_NS
    records = [
        analytics(received, api="kept"),
        analytics(received + day + 2 * 10**9, api="too-far-ahead"),
        analytics(received - 7 * day - 2 * 10**9, api="too-far-behind"),
        analytics(received + day - 10**9, api="just-within"),
    ]
    archive_messages(
        sink, tmp_path / "wal", [(message("tyk.analytics", records, node="gw", seq=0), received)]
    )
    bridge = CapturingBridge()
    replayer = Replayer(EventsArchive(sink), cast(BridgePublisher, bridge))
    summary = replayer.run(TimeRange(received - HOUR_NS, received + HOUR_NS))
    ((_, node, sent),) = bridge.sent
    assert node == "replay-gw"
    assert [r["api_id"] for r in sent] == ["kept", "just-within"]
    assert (summary.records, summary.refused) == (2, 2)


@pytest.mark.parametrize("size", [8, 12])
def test_a_timestamp_extension_is_archived_rebuilt_and_replayed_to_the_nanosecond(
    sink: ClickHouseSink, tmp_path: Path, size: int
) -> None:
    # The archive decoded payloads as Any, where msgspec makes an extension a datetime of
    # microseconds, and archived that: a rebuild moved a record 1 ns before a minute's end into
    # the next minute, and a replay re-sent it so.
    edge = first_hour_ns() + 10 * MINUTE_NS
    edge_s = edge // 10**9
    stamps = {"before": timestamp_ext(edge_s - 1, 999_999_999, size), "at": timestamp_ext(edge_s, 0, size)}
    records = [analytics(stamp, api=api) for api, stamp in stamps.items()]
    archive_messages(sink, tmp_path / "wal", [(message("tyk.analytics", records, node="gw", seq=0), edge)])

    def minutes() -> list[tuple[str, int]]:
        rows = fetch_view(sink.client, sink.database, "traffic_1m")
        return sorted((r["api_id"], r["window_start"]) for r in rows)

    counted = [("at", edge_s), ("before", edge_s - 60)]
    assert minutes() == counted
    rebuild(sink, edge - HOUR_NS, edge + HOUR_NS, force=True)
    assert minutes() == counted
    bridge = CapturingBridge()
    Replayer(EventsArchive(sink), cast(BridgePublisher, bridge)).run(
        TimeRange(edge - HOUR_NS, edge + HOUR_NS)
    )
    ((_, _, sent),) = bridge.sent
    assert {r["api_id"]: to_ns(r["timestamp"]) for r in sent} == {
        "before": edge - 1,
        "at": edge,
    }


def test_a_record_with_a_malformed_timestamp_extension_leaves_the_rest_of_its_message_archived(
    sink: ClickHouseSink, tmp_path: Path
) -> None:
    # The worker rejects such a record alone (bad_timestamp); the archive failed to decode the
    # whole payload and skipped the message, so a rebuild lost the records beside it.
    edge = first_hour_ns() + 10 * MINUTE_NS
    malformed = msgspec.msgpack.Ext(-1, (10**9).to_bytes(4, "big") + (edge // 10**9).to_bytes(8, "big"))
    records = [
        analytics(edge, api="kept"),
        analytics(malformed, api="malformed"),
        analytics(edge, api="kept"),
    ]
    archive_messages(sink, tmp_path / "wal", [(message("tyk.analytics", records, node="gw", seq=0), edge)])

    def requests() -> list[tuple[str, int]]:
        rows = fetch_view(sink.client, sink.database, "traffic_1m")
        return sorted((r["api_id"], r["requests"]) for r in rows)

    assert requests() == [("kept", 2)]
    rebuild(sink, edge - HOUR_NS, edge + HOUR_NS, force=True)
    assert requests() == [("kept", 2)]


def test_a_damaged_archive_row_is_counted_and_the_messages_after_it_still_replayed_and_rebuilt(
    sink: ClickHouseSink, tmp_path: Path
) -> None:
    # Found by attack: one archived row whose payload is no msgpack ended `tykpulse replay` with a
    # traceback, and the good messages after it were never sent; one whose topic is no ASCII text
    # ended `tykpulse rebuild` with a UnicodeEncodeError.
    received = first_hour_ns()
    flusher = archiving_flusher(sink, tmp_path / "wal")
    for seq, at in enumerate((received, received + 3 * 10**9)):
        frames = message("tyk.analytics", [analytics(at, api=f"good{seq}")], node="gw", seq=seq)
        assert flusher.writer.append(frames, at)
    flusher.writer.commit()
    drain(flusher)
    flusher.close()
    stamp = f"toDateTime({(received + 10**9) // 10**9}, 'UTC')"
    sink.client.command(
        f"INSERT INTO {sink.database}.{ARCHIVE_TABLE} "
        "(received, node, boot, seq, topic, records, first_event, last_event, payload) VALUES "
        f"({stamp}, 'damaged', 1, 1, 'tyk.analytics', 1, {stamp}, {stamp}, unhex('C1')), "
        f"({stamp}, 'damaged', 1, 2, 'tyk.analytiçs', 1, {stamp}, {stamp}, unhex('91C0'))"
    )
    span = TimeRange(received - HOUR_NS, received + HOUR_NS)
    bridge = CapturingBridge()
    summary = Replayer(EventsArchive(sink), cast(BridgePublisher, bridge)).run(span)
    assert [r["api_id"] for _, _, sent in bridge.sent for r in sent] == ["good0", "good1"]
    assert summary.unreadable == 1
    rebuilt = rebuild(sink, received - HOUR_NS, received + HOUR_NS, force=True)
    assert rebuilt.records == 2
    requests = sink.query_rows(f"SELECT sum(requests) FROM {sink.database}.traffic_1h")[0][0]
    assert requests == 2
