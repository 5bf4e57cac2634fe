"""Hostile input through the worker loop (Ingestor.ingest + take + compute): never a crash,
never a lost good record, every rejection counted by its reason."""

from __future__ import annotations

import logging

import pytest

from pipelines.firehose.protocol import RejectReason
from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from tests.conftest import T0_NS
from tests.helpers import analytics, message
from tests.hostile import garbage_with_valid_envelopes, hostile_messages, huge_array_message

pytestmark = pytest.mark.unit

CASES = hostile_messages(T0_NS)


@pytest.mark.parametrize(("name", "frames", "reason", "count"), CASES, ids=[c[0] for c in CASES])
def test_each_hostile_message_is_rejected_with_its_reason_and_costs_no_good_record(
    name: str, frames: list[bytes], reason: RejectReason, count: int
) -> None:
    ingestor = Ingestor(clock=lambda: T0_NS)
    ingestor.ingest(message("tyk.analytics", [analytics(T0_NS, api="before")] * 3, node="good", seq=0))
    ingestor.ingest(frames)
    ingestor.ingest(message("tyk.analytics", [analytics(T0_NS, api="after")] * 2, node="good", seq=1))
    batch = ingestor.take()
    tables = compute(batch)
    assert dict(ingestor.stats.rejected) == {reason.value: count}, name
    assert sorted(batch.analytics.frame()["api_id"].to_list()) == ["after"] * 2 + ["before"] * 3
    assert tables["traffic"].column("requests").to_pylist() in ([2, 3], [3, 2])
    health = {r["node_id"]: r for r in tables["ingest_health"].to_pylist()}
    assert health["good"]["records"] == 5
    assert sum(r["rejected"] for r in health.values()) == count


def test_all_of_them_at_once_then_a_normal_flush(caplog: pytest.LogCaptureFixture) -> None:
    ingestor = Ingestor(clock=lambda: T0_NS)
    with caplog.at_level(logging.WARNING):
        for round_ in range(50):
            for _, frames, _, _ in hostile_messages(T0_NS, node=f"evil{round_}"):
                ingestor.ingest(frames)
            ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)], node="good", seq=round_))
    batch = ingestor.take()
    compute(batch)
    assert batch.analytics.height == 50
    expected: dict[str, int] = {}
    for _, _, reason, count in CASES:
        expected[reason.value] = expected.get(reason.value, 0) + 50 * count
    assert dict(ingestor.stats.rejected) == expected
    # a sample per reason is logged, not a line per message
    rejected_lines = [r for r in caplog.records if r.getMessage().startswith("rejected reason=")]
    assert len({r.getMessage().split()[1] for r in rejected_lines}) == len(expected)
    assert len(rejected_lines) <= 2 * len(expected)


def test_a_huge_array_in_a_skipped_field_is_accepted() -> None:
    ingestor = Ingestor(clock=lambda: T0_NS)
    ingestor.ingest(huge_array_message(T0_NS))
    assert ingestor.take().analytics.height == 1
    assert not ingestor.stats.rejected


def test_sequence_gaps_are_logged_as_rate_limited_samples(caplog: pytest.LogCaptureFixture) -> None:
    ingestor = Ingestor(clock=lambda: T0_NS)
    with caplog.at_level(logging.WARNING):
        for seq in range(0, 2000, 2):  # every other message lost
            ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)], seq=seq))
    assert ingestor.stats.lost == 999
    gap_lines = [r for r in caplog.records if "sequence gap" in r.getMessage()]
    assert len(gap_lines) == 1
    assert "lost_total=1" in gap_lines[0].getMessage()


def test_the_pending_buffer_is_bounded_and_take_makes_room() -> None:
    ingestor = Ingestor(clock=lambda: T0_NS, max_pending_records=10)
    for seq in range(3):
        ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)] * 4, seq=seq))
    assert ingestor.pending_records == 12
    assert not ingestor.wait_for_room(0.01)
    ingestor.take()
    assert ingestor.wait_for_room(0.01)


def test_a_flood_of_empty_messages_is_bounded_like_records() -> None:
    # Found by attack: messages of count 0 in sequence added nothing to the bound, so the receiver
    # never waited; 200,000 of them held ~35 MB until the next flush, however late that came.
    ingestor = Ingestor(clock=lambda: T0_NS, max_pending_records=10)
    frames = [message("tyk.analytics", [], seq=seq) for seq in range(5)]
    ingestor.ingest_many(frames, [T0_NS] * 5)
    for seq in range(5, 10):  # one at a time: the reference way
        ingestor.ingest(message("tyk.analytics", [], seq=seq, enc="json"))
    assert ingestor.stats.messages == 10
    assert not ingestor.wait_for_room(0.01)
    ingestor.take()
    assert ingestor.wait_for_room(0.01)


def test_messages_refused_as_a_whole_advance_the_sequence_and_are_counted_rejected() -> None:
    ingestor = Ingestor(clock=lambda: T0_NS)
    ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)], node="n", boot=7, seq=0))
    for frames in garbage_with_valid_envelopes(T0_NS, "n", 7, seq=1):
        ingestor.ingest(frames)
    ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)], node="n", boot=7, seq=5))
    tables = compute(ingestor.take())
    assert ingestor.stats.lost == 0
    assert ingestor.stats.rejected_messages == 4
    [health] = tables["ingest_health"].to_pylist()
    assert (health["messages"], health["records"], health["lost_messages"]) == (2, 2, 0)
    assert health["rejected_messages"] == 4
    assert health["rejected"] >= 4  # every refused message counts, even one that claimed 0 records
    [registry] = tables["publishers"].to_pylist()
    assert (registry["messages"], registry["lost_messages"]) == (2, 0)


def test_a_gap_before_a_refused_message_is_still_a_loss_and_a_repeat_is_a_duplicate() -> None:
    ingestor = Ingestor(clock=lambda: T0_NS)
    ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)], node="n", boot=7, seq=0))
    garbage = garbage_with_valid_envelopes(T0_NS, "n", 7, seq=3)[0]  # seq 1 and 2 never arrived
    ingestor.ingest(garbage)
    ingestor.ingest(garbage)
    [health] = compute(ingestor.take())["ingest_health"].to_pylist()
    assert (health["lost_messages"], health["rejected_messages"]) == (2, 1)
    assert ingestor.stats.duplicates == 1
