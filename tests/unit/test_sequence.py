from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.firehose.sequence import MAX_RUNS, SequencePosition, SequenceTracker, Verdict
from pipelines.ingest import Ingestor
from pipelines.wal.checkpoint import Checkpoint
from tests.conftest import T0_NS
from tests.helpers import analytics, message

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
    # a checkpoint now keeps every run of seqs seen: the one restored, and the one after the gap
    assert tracker.positions() == [SequencePosition("gw1", 2, 44, runs=((41, 41), (44, 44)))]


def test_a_restored_tracker_drops_the_copies_the_live_one_would() -> None:
    # Left open before (stop 26): a restored sequence took only the checkpointed seq as seen, so a
    # copy of an older message accepted after a restart was counted again.
    live = SequenceTracker()
    for seq in [*range(10), 15, 16]:
        live.observe("gw", 1, seq)
    restored = SequenceTracker.from_positions(live.positions())
    for seq in (3, 9, 15):
        assert restored.observe("gw", 1, seq).verdict is Verdict.DUPLICATE
    for seq in (12, 17, 30, 12):  # whatever comes next, the restored tracker judges it as the live one
        assert restored.observe("gw", 1, seq) == live.observe("gw", 1, seq), seq
    checkpoint = msgspec.json.decode(msgspec.json.encode(live.positions()), type=list[SequencePosition])
    assert checkpoint == live.positions()  # through the checkpoint's JSON, unchanged


def test_positions_keep_the_boots_heard_most_per_node_the_newest_among_equals() -> None:
    tracker = SequenceTracker()
    for node, boot, seq in (("b", 1, 5), ("a", 1, 3), ("a", 2, 0)):
        tracker.observe(node, boot, seq)
    assert tracker.positions(boots_per_node=1) == [
        SequencePosition("a", 2, 0, runs=((0, 0),)),
        SequencePosition("b", 1, 5, runs=((5, 5),)),
    ]
    assert len(tracker.positions()) == 3


# Found by attack: the tracker took any forward jump as the new last seq, so one message under a
# publisher's node and boot with seq 2**63 - 1 (even one refused as a whole, for its topic) made
# every later message of that publisher a duplicate, and the checkpoint kept it so across restarts.
FAR = 2**63 - 1


def test_a_far_seq_under_a_publishers_name_costs_that_publisher_nothing() -> None:
    tracker = SequenceTracker()
    for seq in range(100):
        tracker.observe("gw", 1, seq)
    jump = tracker.observe("gw", 1, FAR)
    assert (jump.verdict, jump.lost, jump.implausible_jump) == (Verdict.ACCEPT, 0, True)
    assert [tracker.observe("gw", 1, seq).verdict for seq in range(100, 200)] == [Verdict.ACCEPT] * 100
    assert tracker.observe("gw", 1, 150).verdict is Verdict.DUPLICATE
    assert tracker.observe("gw", 1, FAR).verdict is Verdict.DUPLICATE
    assert tracker.publishers()[0].lost == 0
    assert tracker.last_seq("gw", 1) == 199  # the run the publisher's own messages extend


def test_a_jump_within_reach_is_counted_lost_and_takes_only_the_seq_it_claims() -> None:
    tracker = SequenceTracker()
    for seq in range(10):
        tracker.observe("gw", 1, seq)
    assert tracker.observe("gw", 1, 1000).lost == 990
    verdicts = [tracker.observe("gw", 1, seq).verdict for seq in range(10, 1002)]
    assert verdicts.count(Verdict.DUPLICATE) == 1  # seq 1000 itself: the same seq is the same message
    assert verdicts[1000 - 10] is Verdict.DUPLICATE
    assert tracker.publishers()[0].lost == 990


def test_a_checkpoint_taken_after_a_far_seq_does_not_silence_the_publisher_after_a_restart() -> None:
    tracker = SequenceTracker()
    for seq in range(50):
        tracker.observe("gw", 1, seq)
    tracker.observe("gw", 1, FAR)  # the last message before the checkpoint
    restored = SequenceTracker.from_positions(tracker.positions())
    assert [restored.observe("gw", 1, seq).verdict for seq in range(50, 80)] == [Verdict.ACCEPT] * 30
    assert restored.observe("gw", 1, FAR).verdict is Verdict.DUPLICATE


def test_runs_are_bounded_and_the_publishers_own_run_survives_a_flood_of_claims() -> None:
    tracker = SequenceTracker()
    tracker.observe("gw", 1, 0)
    for i in range(1, 1000):
        tracker.observe("gw", 1, 10**12 + 7 * i)  # claims, each a run of its own
        assert tracker.observe("gw", 1, i).verdict is Verdict.ACCEPT
    assert len(tracker.publishers()[0].runs) <= MAX_RUNS


def _losing_at_most(gaps: list[int], losses: int) -> list[int]:
    """The gaps with only the first `losses` above 1 kept: each loss starts a run, and with more
    than MAX_RUNS runs the least recently extended one (a claim's) is forgotten, as it should be."""
    kept = [i for i, gap in enumerate(gaps) if gap > 1][:losses]
    return [gap if gap == 1 or i in kept else 1 for i, gap in enumerate(gaps)]


@settings(max_examples=300, deadline=None)
@given(
    # the publisher's run, its losses and the claims together never exceed MAX_RUNS
    gaps=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=60).map(
        lambda gaps: _losing_at_most(gaps, MAX_RUNS - 4)
    ),
    claims=st.lists(
        st.tuples(st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=2**64 - 1)),
        max_size=3,
    ),
)
def test_every_message_of_the_publisher_is_accepted_unless_its_seq_was_claimed_first(
    gaps: list[int], claims: list[tuple[int, int]]
) -> None:
    """A publisher's stream (with losses) interleaved with a few claims of arbitrary seqs."""
    tracker = SequenceTracker()
    seen: set[int] = set()
    seq = -1
    claims_at: dict[int, list[int]] = {}
    for at, claimed in claims:
        claims_at.setdefault(at, []).append(claimed)
    lost = 0
    for i, gap in enumerate(gaps):
        for claimed in claims_at.get(i, []):
            tracker.observe("gw", 1, claimed)
            seen.add(claimed)
        seq += gap
        verdict = tracker.observe("gw", 1, seq).verdict
        assert verdict is (Verdict.DUPLICATE if seq in seen else Verdict.ACCEPT)
        seen.add(seq)
        lost += gap - 1 if i else 0
    if not claims:
        assert tracker.publishers()[0].lost == lost  # without claims, loss is exact


def test_a_refused_message_under_a_publishers_name_does_not_drop_its_later_records() -> None:
    ingestor = Ingestor(clock=lambda: T0_NS)
    for seq in range(5):
        ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)] * 20, seq=seq), received_ns=T0_NS)
    # refused as a whole (a topic no publisher may use), its envelope read: it moves the sequence
    ingestor.ingest(message("tyk.bogus!", [], seq=FAR), received_ns=T0_NS)
    for seq in range(5, 10):
        ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)] * 20, seq=seq), received_ns=T0_NS)
    assert ingestor.take().analytics.height == 200
    assert (ingestor.stats.duplicates, ingestor.stats.lost) == (0, 0)


def test_incarnations_are_bounded_and_the_ones_heard_most_are_kept() -> None:
    # Found by attack on bridge kafka, whose tracker never forgot: 300 messages, each under a new
    # boot, left 300 entries for good (with ~1 MB nodes, 93 -> 380 MB).
    tracker = SequenceTracker(max_incarnations=100)
    for seq in range(50):
        tracker.observe("gw-real", 1, seq)
    for boot in range(1000):
        tracker.observe("made-up", boot, 0)
        assert len(tracker) <= 100
    assert tracker.last_seq("gw-real", 1) == 49
    assert tracker.observe("gw-real", 1, 52).lost == 2


def test_a_forged_newer_boot_does_not_push_the_publishers_own_out_of_a_kafka_position() -> None:
    # Found by attack on the Kafka path: positions kept only the newest boot per node, so one
    # record under the node's name with a higher boot erased the real sequence at every flush
    # (a duplicate counted twice, a gap of 5 never counted as lost).
    tracker = SequenceTracker()
    for seq in range(5):
        tracker.observe("gw", 1000, seq)
    tracker.observe("gw", 5001, 0)  # forged
    restored = SequenceTracker.from_positions(tracker.positions(boots_per_node=2))
    assert restored.observe("gw", 1000, 4).verdict is Verdict.DUPLICATE
    assert restored.observe("gw", 1000, 10).lost == 5


def test_a_node_name_cannot_forge_log_lines_or_touch_a_sequence(caplog: pytest.LogCaptureFixture) -> None:
    # Found by attack: a node "gw\n<date> ERROR ..." wrote a whole forged line into the worker's log
    # (through the gap and first-heard lines), and ESC sequences reached whoever read it in a terminal.
    ingestor = Ingestor()
    forged = "gw\n2026-12-07 01:00:00,000 ERROR pipelines.ingest: FORGED \x1b[2J"
    caplog.set_level("INFO")
    for seq in (0, 5):
        ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)], node=forged, seq=seq), T0_NS)
    ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)], node="gw", seq=0), T0_NS)
    assert ingestor.stats.rejected["bad_envelope"] == 2
    assert (ingestor.stats.messages, ingestor.stats.lost) == (1, 0)
    for record in caplog.records:
        line = record.getMessage()
        assert "\n" not in line, line
        assert "\x1b" not in line, line
