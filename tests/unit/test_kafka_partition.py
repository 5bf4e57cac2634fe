"""The Kafka runner's pure parts: the record format, sequence snapshots, exact-range flushes."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.firehose.codec import MessageDecoder, Rejection
from pipelines.firehose.kafka_record import (
    HEADER_BUNDLE,
    HEADER_ENVELOPE,
    HEADER_FRAMES,
    HEADER_TOPIC,
    MAX_BUNDLE_MESSAGES,
    MAX_FRAMES,
    messages_of,
    read_envelope,
    to_frames,
    to_record,
    to_records,
)
from pipelines.firehose.protocol import RejectReason
from pipelines.firehose.sequence import SequenceTracker, Verdict
from pipelines.ingest import Ingestor, ReplayClock
from pipelines.keys import KeyHasher
from pipelines.runners.kafka_partition import Added, PartitionProcessor, restore, snapshot
from sinks.clickhouse.positions import Position, SequenceState
from tests.conftest import T0_NS
from tests.helpers import analytics, message

pytestmark = pytest.mark.unit
MS = 1_000_000


def make_ingestor() -> Ingestor:
    return Ingestor(clock=ReplayClock(), hasher=KeyHasher(b"salt"))


def claimed(first: int = 0, last: int = -1, state: SequenceState | None = None) -> Position:
    return Position("t", 0, 1, first, last, state or SequenceState(), "me")


def log_of(
    count: int, *, node: str = "gw1", skip: frozenset[int] = frozenset()
) -> list[tuple[int, int, Any]]:
    """(offset, timestamp_ms, record) for `count` messages of one node; seqs in `skip` never reached Kafka."""
    out = []
    offset = 0
    for seq in range(count):
        if seq in skip:
            continue
        frames = message(
            "tyk.analytics", [analytics(T0_NS + seq * 10**9, api=f"a{seq % 3}")], node=node, seq=seq
        )
        out.append((offset, T0_NS // MS + seq * 1000, to_record(frames, read_envelope(frames[1]))))
        offset += 1
    return out


def feed(processor: PartitionProcessor, log: list[tuple[int, int, Any]]) -> list[Added]:
    return [processor.add(o, ts, r.value, r.headers) for o, ts, r in log]


def tables(flush: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: sorted(t.to_pylist(), key=repr) for name, t in flush.partials.items()}


def test_record_round_trip_keeps_frames_and_keys_by_node() -> None:
    frames = message("tyk.analytics", [analytics(T0_NS)], node="gw-7", seq=4)
    record = to_record(frames, read_envelope(frames[1]))
    assert record.key == b"gw-7"
    assert dict(record.headers)[HEADER_TOPIC] == b"tyk.analytics"
    assert dict(record.headers)[HEADER_ENVELOPE] == frames[1]
    assert to_frames(record.value, record.headers) == frames


def test_bad_messages_stay_rejectable_after_the_round_trip() -> None:
    two = to_record([b"tyk.analytics", b"x"], None)
    assert two.key == b""
    assert messages_of(two.value, two.headers) == [[b"tyk.analytics", b"x"]]  # a bundle of one
    garbled = to_record([b"tyk.analytics", b"\xc1", b"x"], read_envelope(b"\xc1"))
    assert garbled.key == b""
    assert to_frames(b"x", []) == []


def test_snapshot_keeps_the_two_boots_per_node_heard_most_and_restores() -> None:
    tracker = SequenceTracker()
    for node, boot, seq in [("b", 1, 5), ("a", 2, 7), ("a", 1, 9), ("a", 2, 8), ("a", 3, 0)]:
        tracker.observe(node, boot, seq)
    state = snapshot(tracker)
    # a: boot 2 heard twice; boots 1 and 3 once each, the newer one kept
    runs = ((7,), (0,), (5,)), ((8,), (0,), (5,))  # lows, highs: a/2 saw 7-8
    assert state == SequenceState(("a", "a", "b"), (2, 3, 1), (8, 0, 5), *runs)
    assert snapshot(restore(state)) == state
    assert restore(state).observe("a", 2, 10).lost == 1
    # a copy of a message of an earlier flush is a duplicate after a restore, as it was live
    assert restore(state).observe("a", 2, 7).verdict is Verdict.DUPLICATE
    # a row written before the runs were kept: its last seq alone was seen
    old = SequenceState(("a",), (2,), (8,))
    assert restore(old).observe("a", 2, 7).verdict is Verdict.ACCEPT
    assert restore(old).observe("a", 2, 8).verdict is Verdict.DUPLICATE


def test_two_forged_boots_in_a_quiet_range_do_not_erase_the_publishers_sequence() -> None:
    # Found by attack on the Kafka path: a restored tracker has heard no one, so two records under
    # a node's name with other boots, in a flush range where the node itself was quiet, were "the
    # two boots heard most" and the publisher's own runs were gone after that flush: a copy of one
    # of its messages counted again, and a gap of 5 counted as 9.
    processor = PartitionProcessor(claimed(), make_ingestor)
    offsets = iter(range(100))

    def send(boot: int, seq: int) -> None:
        frames = message("tyk.analytics", [analytics(T0_NS + seq * 10**9)], node="gw", boot=boot, seq=seq)
        record = to_record(frames, read_envelope(frames[1]))
        processor.add(next(offsets), T0_NS // MS + seq * 1000, record.value, record.headers)

    for seq in range(10):
        send(1, seq)
    processor.take_flush()
    send(5, 0)  # forged
    send(6, 0)  # forged
    processor.take_flush()
    send(1, 5)  # a copy of a message already counted
    send(1, 15)  # 10-14 never arrived
    health = tables(processor.take_flush())["ingest_health"]
    assert [(row["messages"], row["lost_messages"]) for row in health] == [(1, 5)]


def test_a_copy_of_a_message_flushed_before_is_a_duplicate_and_no_loss() -> None:
    # Found by attack on a real broker: the tracker restored after every flush held the last seq
    # alone, so the bridge's copy of seq 5 after seqs 0-9 were flushed was counted again, and the
    # next flush's gap from 5 to 10 counted 4 messages lost that never were.
    processor = PartitionProcessor(claimed(), make_ingestor)
    log = log_of(11)
    for offset, ts, record in log[:10]:
        processor.add(offset, ts, record.value, record.headers)
    processor.take_flush()
    _, ts5, copy = log[5]
    processor.add(10, ts5, copy.value, copy.headers)  # the same message again, at the next offset
    processor.take_flush()
    _, ts10, last = log[10]
    processor.add(11, ts10, last.value, last.headers)
    processor.take_flush()
    stats = processor.ingestor.stats
    assert (stats.duplicates, stats.lost) == (1, 0)


def test_a_redone_range_gives_the_same_flush_and_token() -> None:
    log = log_of(30, skip=frozenset({12}))
    first = PartitionProcessor(claimed(), make_ingestor)
    feed(first, log[:10])
    flush_a = first.take_flush()
    feed(first, log[10:20])
    flush_b = first.take_flush()
    # a successor claims after flush_b's intent: it redoes exactly flush_b's range
    successor = PartitionProcessor(flush_b.position, make_ingestor)
    assert successor.redo_until == flush_b.position.last_offset
    assert feed(successor, log[:10]) == [Added.SKIPPED] * 10
    for offset, ts, record in log[10:25]:
        successor.add(offset, ts, record.value, record.headers)
        if successor.at_redo_end:
            redo = successor.take_flush()
    assert redo.position == flush_b.position
    assert redo.position.token == flush_b.position.token != flush_a.position.token
    assert tables(redo) == tables(flush_b)
    lost = sum(r["lost_messages"] for r in tables(redo)["ingest_health"])
    assert lost == 1  # seq 12 missing: counted by the redo exactly as by the first attempt


def test_offsets_ahead_of_clickhouse_ask_for_one_seek_then_wait() -> None:
    log = log_of(5)
    processor = PartitionProcessor(claimed(first=2), make_ingestor)
    assert processor.add(4, *log[4][1:2], log[4][2].value, log[4][2].headers) is Added.SEEK
    assert processor.add(3, log[3][1], log[3][2].value, log[3][2].headers) is Added.IGNORED
    assert processor.add(2, log[2][1], log[2][2].value, log[2][2].headers) is Added.ACCEPTED
    assert processor.add(1, log[1][1], log[1][2].value, log[1][2].headers) is Added.SKIPPED
    assert processor.next_offset == 3


def test_offsets_that_hold_no_record_are_passed_once_the_log_says_so() -> None:
    log = log_of(4)
    processor = PartitionProcessor(claimed(), make_ingestor)
    assert feed(processor, log[:2]) == [Added.ACCEPTED] * 2
    # offset 2 is a transaction's commit marker: the next record a reader is handed is at 3
    assert processor.add(3, log[2][1], log[2][2].value, log[2][2].headers) is Added.SEEK
    assert not processor.skip_to(1, 3)  # asked about an offset it no longer expects
    assert processor.skip_to(2, 3)
    assert processor.add(3, log[2][1], log[2][2].value, log[2][2].headers) is Added.ACCEPTED
    flush = processor.take_flush()
    assert (flush.position.first_offset, flush.position.last_offset, flush.messages) == (0, 3, 3)


def test_receive_time_is_the_kafka_timestamp_not_the_worker_clock() -> None:
    processor = PartitionProcessor(claimed(), make_ingestor)
    feed(processor, log_of(3))
    windows = {r["window_start"] for r in tables(processor.take_flush())["ingest_health"]}
    assert windows == {(T0_NS // 10**9) // 60 * 60}


def test_bundles_keep_each_nodes_order_and_respect_their_limits() -> None:
    nodes = ["a", "b", "a", "a", "b", "a"]
    frames = [message("tyk.analytics", [analytics(T0_NS)], node=n, seq=i) for i, n in enumerate(nodes)]
    messages = [(f, read_envelope(f[1])) for f in frames]

    records = to_records(messages, max_messages=3, max_bytes=1 << 20)
    assert [(r.key, carried) for r, carried in records] == [(b"a", [0, 2, 3]), (b"b", [1, 4]), (b"a", [5])]
    for record, carried in records:
        assert messages_of(record.value, record.headers) == [frames[i] for i in carried]
    assert dict(records[2][0].headers)[HEADER_ENVELOPE] == frames[5][1]  # one message: the plain format

    size = sum(len(f) for f in frames[0])
    by_bytes = to_records(messages, max_messages=100, max_bytes=2 * size)
    assert [carried for _, carried in by_bytes] == [[0, 2], [1, 4], [3, 5]]
    assert [carried for _, carried in to_records(messages, 1, 1 << 20)] == [[i] for i in range(6)]


def test_a_bundle_counts_every_message_and_a_broken_one_is_a_counted_rejection() -> None:
    frames = [message("tyk.analytics", [analytics(T0_NS)], node="gw1", seq=s) for s in range(4)]
    [(bundle, _)] = to_records([(f, read_envelope(f[1])) for f in frames], 10, 1 << 20)
    processor = PartitionProcessor(claimed(), make_ingestor)
    assert processor.add(0, T0_NS // MS, bundle.value, bundle.headers) is Added.ACCEPTED
    assert processor.add(1, T0_NS // MS, b"\xc1 not msgpack", bundle.headers) is Added.ACCEPTED
    assert processor.ingestor.stats.rejected_total == 1
    flush = processor.take_flush()
    assert (flush.messages, flush.records) == (5, 4)
    health = tables(flush)["ingest_health"]
    assert sum(r["messages"] for r in health) == 4  # the accepted ones; the broken record is a rejection
    assert sum(r["rejected"] for r in health) == 1
    assert messages_of(b"", [("tyk-bundle", b"0")]) == [[]]


# Found by attack on a real broker: each of these put `tykpulse worker` in a crash loop or lost
# the partition's good records while their offsets were recorded as written.
def test_a_null_frames_header_is_a_rejected_message_not_a_crash() -> None:
    decoded = MessageDecoder().decode(messages_of(b"x", [(HEADER_FRAMES, None)])[0])  # type: ignore[list-item]
    assert isinstance(decoded, Rejection)
    assert decoded.reason is RejectReason.FRAME_COUNT


@pytest.mark.parametrize(
    "value",
    [
        b"\xdd" + (MAX_BUNDLE_MESSAGES + 1).to_bytes(4, "big") + b"\x90" * (MAX_BUNDLE_MESSAGES + 1),
        b"\x91\xdc" + (MAX_FRAMES + 1).to_bytes(2, "big") + b"\xc4\x00" * (MAX_FRAMES + 1),
        b"\xdd" + (16_000_000).to_bytes(4, "big"),  # claims 16 M messages, carries none
    ],
)
def test_a_bundle_past_its_bounds_is_one_rejection_built_from_its_header(value: bytes) -> None:
    # a 66 KB lz4 record unpacking to 16 M empty messages took 3.2 GB and a rebalance
    carried = messages_of(value, [(HEADER_BUNDLE, b"1")])
    assert len(carried) == 1
    decoded = MessageDecoder().decode(carried[0])
    assert isinstance(decoded, Rejection)
    assert decoded.reason is RejectReason.MESSAGE_TOO_LARGE


def test_a_record_with_an_impossible_timestamp_costs_no_good_record() -> None:
    log = log_of(11)
    processor = PartitionProcessor(claimed(), make_ingestor)
    for offset, ts, record in log:
        bad = -(10**13) if offset == 5 else ts  # a producer may set any CreateTime
        processor.add(offset, bad, record.value, record.headers)
    flush = processor.take_flush()
    assert (flush.position.first_offset, flush.position.last_offset) == (0, 10)
    assert flush.messages == 11
    traffic = flush.partials["traffic"].to_pylist()
    # every other record, in its own event-time window; the one whose message claims to have been
    # received in 1653 BC (clamped to 1970) is judged by that time, as every record is by its own
    # message's: counted as a future timestamp, never silently
    assert sum(row["requests"] for row in traffic) == 10
    rejected = flush.partials["ingest_rejections"].to_pylist()
    assert [(r["reason"], r["rejected"]) for r in rejected] == [("future_timestamp", 1)]


def test_a_flush_that_cannot_be_built_reads_its_range_again() -> None:
    processor = PartitionProcessor(claimed(), make_ingestor)
    feed(processor, log_of(4))

    def broken() -> Any:
        msg = "a bug in the batch build"
        raise RuntimeError(msg)

    processor.ingestor.take = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        processor.take_flush()
    assert processor.next_offset == 0  # not recorded as written: the records are asked for again
    assert processor.add(3, 0, b"", []) is Added.SEEK
