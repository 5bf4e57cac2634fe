from __future__ import annotations

import msgspec
import pytest

from pipelines.firehose.sequence import SequencePosition, SequenceTracker, Verdict
from pipelines.wal.checkpoint import Checkpoint

pytestmark = pytest.mark.unit


def test_consecutive_sequence_loses_nothing() -> None:
    tracker = SequenceTracker()
    assert [tracker.observe("gw", 1, s).lost for s in range(5)] == [0] * 5


def test_a_jump_of_k_counts_k_minus_one_lost() -> None:
    tracker = SequenceTracker()
    tracker.observe("gw", 1, 0)
    assert tracker.observe("gw", 1, 5).lost == 4
    assert tracker.publishers()[0].lost == 4


def test_repeats_and_older_seqs_are_duplicates() -> None:
    tracker = SequenceTracker()
    for seq in (0, 1, 2):
        tracker.observe("gw", 1, seq)
    assert tracker.observe("gw", 1, 2).verdict is Verdict.DUPLICATE
    assert tracker.observe("gw", 1, 0).verdict is Verdict.DUPLICATE
    assert tracker.observe("gw", 1, 3).verdict is Verdict.ACCEPT
    assert tracker.publishers()[0].duplicates == 2


def test_a_new_boot_is_a_new_sequence_not_a_loss() -> None:
    tracker = SequenceTracker()
    tracker.observe("gw", 1, 100)
    observation = tracker.observe("gw", 2, 0)
    assert (observation.lost, observation.new_incarnation) == (0, True)


def test_nodes_are_independent() -> None:
    tracker = SequenceTracker()
    tracker.observe("a", 1, 0)
    tracker.observe("b", 1, 10)
    assert tracker.observe("a", 1, 1).lost == 0
    assert tracker.observe("b", 1, 12).lost == 1


def test_restored_position_counts_what_was_missed() -> None:
    tracker = SequenceTracker()
    tracker.restore("gw", 1, 9)
    assert tracker.observe("gw", 1, 20).lost == 10


def test_one_checkpoint_format_and_a_checkpoint_written_before_it_still_reads() -> None:
    written_by_an_older_version = (
        b'{"wal_id":"abc","flushed":7,"sequences":[{"node":"gw1","boot":2,"last_seq":41,"seen_ns":5}],'
        b'"inflight":null,"version":1}'
    )
    checkpoint = msgspec.json.decode(written_by_an_older_version, type=Checkpoint)
    assert checkpoint.sequences == [SequencePosition("gw1", 2, 41, 5)]
    tracker = SequenceTracker.from_positions(checkpoint.sequences)
    assert tracker.observe("gw1", 2, 44).lost == 2, "messages missed while down count as lost"
    assert tracker.positions() == [SequencePosition("gw1", 2, 44)]


def test_positions_keep_the_newest_boot_per_node_when_asked() -> None:
    tracker = SequenceTracker()
    for node, boot, seq in (("b", 1, 5), ("a", 1, 3), ("a", 2, 0)):
        tracker.observe(node, boot, seq)
    assert tracker.positions(newest_boot_only=True) == [
        SequencePosition("a", 2, 0),
        SequencePosition("b", 1, 5),
    ]
    assert len(tracker.positions()) == 3
