"""Per-publisher sequence tracking: loss and duplicates on a lossy PUB/SUB hop.

For each (node, boot) the next message must carry seq = last + 1. A jump of k
means k - 1 messages were lost; a seq at or below the last one is a duplicate.
A new boot for a node is a new incarnation, not a loss. The first message seen
from an incarnation is taken as its start: messages it sent before anyone
listened are not knowable here.

Checkpoints keep the tracker as a list of SequencePosition, one format for
every runner: the WAL's checkpoint.json stores it as JSON (the same fields as
ever, so a checkpoint written before this format existed reads as it is), and
the Kafka runner stores it, newest boot per node, with each offset range in
ClickHouse (sinks.clickhouse.positions.SequenceState, parallel columns). A
restarted worker restores it, so messages missed while down count as lost.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

import msgspec


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"


@dataclasses.dataclass(slots=True)
class PublisherSequence:
    node: str
    boot: int
    last_seq: int
    accepted: int = 0
    lost: int = 0
    duplicates: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    verdict: Verdict
    lost: int
    new_incarnation: bool


class SequencePosition(msgspec.Struct, frozen=True):
    """A publisher's last seq as a checkpoint keeps it; seen_ns: when it last moved (0: not kept)."""

    node: str
    boot: int
    last_seq: int
    seen_ns: int = 0


class SequenceTracker:
    """Remembers the last seq of every (node, boot) seen."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], PublisherSequence] = {}

    def observe(self, node: str, boot: int, seq: int) -> Observation:
        state = self._by_key.get((node, boot))
        if state is None:
            self._by_key[(node, boot)] = PublisherSequence(node, boot, seq, accepted=1)
            return Observation(Verdict.ACCEPT, 0, True)
        if seq <= state.last_seq:
            state.duplicates += 1
            return Observation(Verdict.DUPLICATE, 0, False)
        lost = seq - state.last_seq - 1
        state.last_seq = seq
        state.accepted += 1
        state.lost += lost
        return Observation(Verdict.ACCEPT, lost, False)

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

    def restore(self, node: str, boot: int, last_seq: int) -> None:
        """Resume from a persisted position, so messages missed while down count as lost."""
        self._by_key[(node, boot)] = PublisherSequence(node, boot, last_seq)

    def positions(self, *, newest_boot_only: bool = False) -> list[SequencePosition]:
        """The tracker as a checkpoint keeps it, sorted (the same state always looks the same)."""
        states: Iterable[PublisherSequence] = self._by_key.values()
        if newest_boot_only:
            newest: dict[str, PublisherSequence] = {}
            for state in states:
                if state.node not in newest or state.boot > newest[state.node].boot:
                    newest[state.node] = state
            states = newest.values()
        ordered = sorted(states, key=lambda s: (s.node, s.boot))
        return [SequencePosition(s.node, s.boot, s.last_seq) for s in ordered]

    def restore_positions(self, positions: Iterable[SequencePosition]) -> None:
        for position in positions:
            self.restore(position.node, position.boot, position.last_seq)

    @classmethod
    def from_positions(cls, positions: Iterable[SequencePosition]) -> SequenceTracker:
        tracker = cls()
        tracker.restore_positions(positions)
        return tracker
