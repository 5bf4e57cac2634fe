from __future__ import annotations

import pytest

from pipelines.firehose.sequence import SequenceTracker, Verdict

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
