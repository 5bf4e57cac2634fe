"""Per-publisher sequence tracking: loss and duplicates on a lossy PUB/SUB hop.

For each (node, boot) the next message must carry seq = last + 1. A jump of k
means k - 1 messages were lost; a seq already seen is a duplicate. A new boot
for a node is a new incarnation, not a loss. The first message seen from an
incarnation is taken as its start: messages it sent before anyone listened are
not knowable here.

What "seen" means is exact: the tracker keeps runs of consecutive seqs seen
(at most MAX_RUNS per incarnation, the least recently extended dropped first),
not "everything up to the highest". A message whose seq jumps ahead starts a
run of its own; the gap before it is counted lost, but not taken as seen. So a
sender that claims another publisher's node and boot with a far higher seq (the
envelope is not authenticated, and CURVE admits keys, not node names) costs
that publisher exactly the seqs it sends, and no more: the publisher's own next
message extends its own run. With "everything up to the highest", one such
message, even one refused as a whole, silenced the publisher for good, across
restarts through the checkpoint. A jump of more than MAX_GAP (no publisher
loses that many messages) is not counted as loss at all.

Checkpoints keep the tracker as a list of SequencePosition (every run of each
incarnation), one format for every runner: the WAL's checkpoint.json stores it
as JSON (a checkpoint written before runs were kept reads as it is: its last
seq alone was seen), and the Kafka runner stores it, the two boots per node
heard most, with each offset range in ClickHouse
(sinks.clickhouse.positions.SequenceState, parallel columns). A restarted
worker restores it, so messages missed while down count as lost, and copies
of messages counted before count as duplicates.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Iterable
from typing import Final

import msgspec

from pipelines.observe.throttle import LogThrottle


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"


# Runs of consecutive seqs remembered per incarnation: one in the normal case, one
# more per loss or jump; the least recently extended goes first.
MAX_RUNS: Final = 8
# No publisher loses this many messages in one gap (12 hours at 100,000 messages/s);
# a larger jump is a message from elsewhere, not a loss.
MAX_GAP: Final = 1 << 32
# Incarnations remembered at most (the workers' liveness tracking forgets them sooner).
MAX_INCARNATIONS: Final = 10_000


@dataclasses.dataclass(slots=True)
class SeqRun:
    """Seqs low..high, all seen; `used`: when it last grew (the incarnation's message count)."""

    low: int
    high: int
    used: int = 0


@dataclasses.dataclass(slots=True)
class PublisherSequence:
    node: str
    boot: int
    # the run the publisher's own messages extend, as far as can be told: the one that grew last
    current: SeqRun
    runs: list[SeqRun]
    accepted: int = 0
    lost: int = 0
    duplicates: int = 0

    @property
    def covered(self) -> int:
        """How many seqs its runs hold: as many messages at least were heard from it."""
        return sum(run.high - run.low + 1 for run in self.runs)

    @property
    def last_seq(self) -> int:
        """The latest seq of the run that grew last (what a checkpoint keeps)."""
        return self.current.high

    def run_bounds(self) -> tuple[tuple[int, int], ...]:
        """Every run as (low, high), least recently extended first (what a checkpoint keeps)."""
        return tuple((run.low, run.high) for run in sorted(self.runs, key=lambda run: run.used))


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    verdict: Verdict
    lost: int
    new_incarnation: bool
    # the seq jumped more than MAX_GAP ahead of every run: not counted as loss
    implausible_jump: bool = False


# What observe() returns for a message that loses, jumps and starts nothing: the common case,
# which a caller on the per-message path can tell by identity and skip.
IN_ORDER: Final = Observation(Verdict.ACCEPT, 0, False)
_DUPLICATE: Final = Observation(Verdict.DUPLICATE, 0, False)


class GapLog:
    """Logs what observations say about loss, at most a line per kind every period (LogThrottle):
    a burst of drops at a high-water mark, or a sender skipping seqs, is not a line per message.
    Every consumer of the firehose (the Ingestor, the Kafka bridge) logs through one."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._throttle = LogThrottle()

    def report(self, observation: Observation, node: str, boot: int, seq: int, lost_total: int) -> None:
        if observation.lost:
            held = self._throttle.allow("gap")
            if held is not None:
                self.log.warning(
                    "sequence gap node=%s boot=%d seq=%d lost=%d lost_total=%d (gaps not logged since the "
                    "last line: %d)",
                    node,
                    boot,
                    seq,
                    observation.lost,
                    lost_total,
                    held,
                )
        elif observation.implausible_jump:
            held = self._throttle.allow("jump")
            if held is not None:
                self.log.warning(
                    "sequence jump node=%s boot=%d seq=%d: more than %d ahead of every seq seen, not "
                    "counted as loss (another sender using this node's name?) (not logged since the "
                    "last line: %d)",
                    node,
                    boot,
                    seq,
                    MAX_GAP,
                    held,
                )


class SequencePosition(msgspec.Struct, frozen=True):
    """A publisher's last seq as a checkpoint keeps it; seen_ns: when it last moved (0: not kept);
    runs: every (low, high) run of seqs seen, so a restored tracker drops the duplicates the live
    one would (empty in a checkpoint written before they were kept: `last_seq` alone is seen)."""

    node: str
    boot: int
    last_seq: int
    seen_ns: int = 0
    runs: tuple[tuple[int, int], ...] = ()


class SequenceTracker:
    """Remembers the seqs seen from every (node, boot), as runs of consecutive seqs."""

    def __init__(self, max_incarnations: int = MAX_INCARNATIONS) -> None:
        self.max_incarnations = max_incarnations
        self._by_key: dict[tuple[str, int], PublisherSequence] = {}

    def observe(self, node: str, boot: int, seq: int) -> Observation:
        state = self._by_key.get((node, boot))
        if state is None:
            run = SeqRun(seq, seq)
            self._by_key[(node, boot)] = PublisherSequence(node, boot, run, [run], accepted=1)
            if len(self._by_key) > self.max_incarnations:
                self._shrink()
            return Observation(Verdict.ACCEPT, 0, True)
        current = state.current
        if seq == current.high + 1 and len(state.runs) == 1:
            # the common case, on the per-message path: the only run grows by one
            current.high = seq
            state.accepted += 1
            current.used = state.accepted
            return IN_ORDER
        return self._observe_runs(state, seq)

    @staticmethod
    def _observe_runs(state: PublisherSequence, seq: int) -> Observation:
        below: SeqRun | None = None  # the run that ends closest below seq
        above: SeqRun | None = None  # a run that starts right after seq
        for run in state.runs:
            if run.low <= seq <= run.high:
                state.duplicates += 1
                return _DUPLICATE
            if run.high < seq and (below is None or run.high > below.high):
                below = run
            elif run.low == seq + 1:
                above = run
        state.accepted += 1
        lost = 0
        jumped = False
        if below is not None and below.high == seq - 1:
            below.high = seq
            run = below
        else:
            if below is not None:
                gap = seq - below.high - 1
                jumped = gap > MAX_GAP
                lost = 0 if jumped else gap
            run = SeqRun(seq, seq)
            if len(state.runs) >= MAX_RUNS:
                state.runs.remove(min(state.runs, key=lambda r: r.used))
            state.runs.append(run)
        if above is not None and above in state.runs:
            run.high = above.high
            state.runs.remove(above)
        run.used = state.accepted
        state.current = run
        state.lost += lost
        return Observation(Verdict.ACCEPT, lost, False, jumped) if lost or jumped else IN_ORDER

    def _shrink(self) -> None:
        """Forget the incarnations heard least (the newest among equals) down to 90 % of the bound:
        envelopes under made-up names must not push out the publishers that were there first."""
        keep = self.max_incarnations * 9 // 10
        ranked = sorted(enumerate(self._by_key.items()), key=lambda item: (-item[1][1].accepted, item[0]))
        self._by_key = {key: state for _, (key, state) in sorted(ranked[:keep])}

    def publishers(self) -> list[PublisherSequence]:
        return list(self._by_key.values())

    def last_seq(self, node: str, boot: int) -> int | None:
        state = self._by_key.get((node, boot))
        return None if state is None else state.last_seq

    def forget(self, node: str, boot: int) -> None:
        """Drop an incarnation (bounded memory): if it is heard again, it starts afresh."""
        self._by_key.pop((node, boot), None)

    def __len__(self) -> int:
        return len(self._by_key)

    def restore(self, node: str, boot: int, last_seq: int, runs: Iterable[tuple[int, int]] = ()) -> None:
        """Resume from a persisted position, so messages missed while down count as lost, and
        copies of messages seen before count as duplicates.

        The runs are restored as they were, never "everything up to `last_seq`": a checkpoint
        written just after a sender claimed this node with a far higher seq must not make the
        publisher's own later messages duplicates after a restart. Without runs (an older
        checkpoint), only `last_seq` itself is taken as seen.
        """
        bounds = [(low, high) for low, high in runs if low <= high][-MAX_RUNS:]
        # older than any run the restored tracker grows (their order kept for the eviction)
        restored = [SeqRun(low, high, used=i - len(bounds)) for i, (low, high) in enumerate(bounds)]
        if not restored:
            restored = [SeqRun(last_seq, last_seq)]
        current = next((run for run in restored if run.low <= last_seq <= run.high), restored[-1])
        self._by_key[(node, boot)] = PublisherSequence(node, boot, current, restored)

    def positions(self, *, boots_per_node: int | None = None) -> list[SequencePosition]:
        """The tracker as a checkpoint keeps it, sorted (the same state always looks the same);
        with `boots_per_node`, only that many incarnations per node (see _kept)."""
        states: Iterable[PublisherSequence] = self._by_key.values()
        if boots_per_node is not None:
            by_node: dict[str, list[PublisherSequence]] = {}
            for state in states:
                by_node.setdefault(state.node, []).append(state)
            states = [
                state for incarnations in by_node.values() for state in _kept(incarnations, boots_per_node)
            ]
        ordered = sorted(states, key=lambda s: (s.node, s.boot))
        return [SequencePosition(s.node, s.boot, s.last_seq, runs=s.run_bounds()) for s in ordered]

    def restore_positions(self, positions: Iterable[SequencePosition]) -> None:
        for position in positions:
            self.restore(position.node, position.boot, position.last_seq, position.runs)

    @classmethod
    def from_positions(cls, positions: Iterable[SequencePosition]) -> SequenceTracker:
        tracker = cls()
        tracker.restore_positions(positions)
        return tracker


def _kept(incarnations: list[PublisherSequence], count: int) -> list[PublisherSequence]:
    """The incarnation heard most since the tracker was built or restored, then those whose runs
    hold the most seqs; the newest among equals. A restored tracker has heard nothing yet: ranked
    by that alone, two messages under a quiet node's name with other boots, in one Kafka flush
    range, took both places and erased the publisher's own sequence at the flush. Now they can
    take the first place only; the second needs more seqs than the publisher was ever heard with."""
    busiest = sorted(incarnations, key=lambda s: (-s.accepted, -s.boot))
    return busiest[:1] + sorted(busiest[1:], key=lambda s: (-s.covered, -s.boot))[: count - 1]
