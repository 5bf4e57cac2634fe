"""One Kafka partition in a worker: records in offset order -> exact-range flushes.

A PartitionProcessor owns an Ingestor of its own (sequence state is per
partition, because records are keyed by node and a node's sequence lives in
one partition). It is built from the Position a worker claimed in ClickHouse
(sinks.clickhouse.positions) and makes every flush a pure function of the
log: the same offset range, read from the same sequence state, gives the same
partial rollups under the same token. Three things make that so:

- receive time is the record's Kafka timestamp (when the bridge received the
  message), not the worker's clock; the Ingestor's clock is that timestamp too;
- the sequence state before each range is recorded with the range and
  restored from it (pruned to two boots per node, in memory and in the record
  alike: the one heard most in the range and the one with the most seqs seen);
- a claimed, possibly half-written range is redone exactly: records are taken
  up to its last offset and flushed there, before anything else.

Records below the next expected offset already landed and are skipped;
records above it mean Kafka's committed offset is ahead of ClickHouse, so the
processor asks for a seek back and ignores records until the expected one, or
that the expected offset holds no record (a transaction marker), which the
runner finds out from the log itself and tells it (skip_to).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import pyarrow as pa

from pipelines.firehose.kafka_record import messages_of
from pipelines.firehose.sequence import SequencePosition, SequenceTracker
from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from sinks.clickhouse.positions import Position, SequenceState

log = logging.getLogger(__name__)


class Added(enum.Enum):
    ACCEPTED = "accepted"
    SKIPPED = "skipped"  # already in ClickHouse
    SEEK = "seek"  # Kafka delivered past the expected offset: seek back to next_offset
    IGNORED = "ignored"  # past the expected offset while a seek is under way


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionFlush:
    """What one flush writes: the intent (position) first, then the partial rollups under its token."""

    position: Position
    partials: dict[str, pa.Table]
    records: int
    messages: int


BOOTS_PER_NODE: Final = 2


def snapshot(tracker: SequenceTracker) -> SequenceState:
    """The tracker's positions (two boots per node, SequenceTracker.positions) as the columns of a
    Kafka position row. Two, not the newest: a forged envelope with a newer boot under a node's
    name would otherwise erase the real publisher's sequence at every flush."""
    positions = tracker.positions(boots_per_node=BOOTS_PER_NODE)
    return SequenceState(
        tuple(p.node for p in positions),
        tuple(p.boot for p in positions),
        tuple(p.last_seq for p in positions),
        tuple(tuple(low for low, _ in p.runs) for p in positions),
        tuple(tuple(high for _, high in p.runs) for p in positions),
    )


def restore(state: SequenceState) -> SequenceTracker:
    """The tracker a flush range starts from: every run of seqs seen before it, so a copy of a
    message flushed earlier is a duplicate here as in the live pass (rows written before the runs
    were kept hold the last seq alone)."""
    count = len(state.nodes)
    lows = state.run_lows if len(state.run_lows) == count else ((),) * count
    highs = state.run_highs if len(state.run_highs) == count else ((),) * count
    return SequenceTracker.from_positions(
        SequencePosition(node, boot, last_seq, runs=tuple(zip(low, high, strict=False)))
        for node, boot, last_seq, low, high in zip(
            state.nodes, state.boots, state.last_seqs, lows, highs, strict=True
        )
    )


class PartitionProcessor:
    def __init__(self, claimed: Position, make_ingestor: Callable[[], Ingestor]) -> None:
        """`make_ingestor` builds a replaying Ingestor (pipelines.ingest.build_ingestor(replay=True))."""
        self.claimed = claimed
        self.ingestor = make_ingestor()
        self.ingestor.sequences = restore(claimed.sequences_before)
        self._before = claimed.sequences_before
        self.next_offset = claimed.first_offset
        # The last offset whose flush is in ClickHouse (a claimed range to redo is not, yet).
        self.landed_offset = claimed.first_offset - 1
        # A claimed non-empty range may be half written: redo exactly it, first.
        self.redo_until: int | None = None if claimed.is_empty else claimed.last_offset
        self._first: int | None = None
        self._last = -1
        self._messages = 0
        self._seeking = False
        self.revoked = False
        self._active_at = time.monotonic()

    def touch(self) -> None:
        self._active_at = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since a record was accepted (or the processor was created or touched)."""
        return time.monotonic() - self._active_at

    @property
    def label(self) -> str:
        return f"{self.claimed.topic}[{self.claimed.partition}]"

    def add(
        self, offset: int, timestamp_ms: int, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Added:
        if offset < self.next_offset:
            return Added.SKIPPED
        if offset > self.next_offset:
            if self._seeking:
                return Added.IGNORED
            self._seeking = True
            log.warning(
                "partition=%s delivered offset=%d, ClickHouse expects %d: seeking back",
                self.label,
                offset,
                self.next_offset,
            )
            return Added.SEEK
        self._seeking = False
        self._active_at = time.monotonic()
        received_ns = timestamp_ms * 1_000_000
        carried = messages_of(value, headers)
        self.ingestor.ingest_many(carried, [received_ns] * len(carried))
        if self._first is None:
            self._first = offset
        self._last = offset
        self._messages += len(carried)
        self.next_offset = offset + 1
        return Added.ACCEPTED

    def skip_to(self, expected: int, found: int) -> bool:
        """Expect `found` next instead of `expected`, when a reader of the log starting at `expected`
        is handed `found` first (pipelines.runners.kafka_probe): the offsets between hold no record,
        a transaction marker for one. False if the processor has moved on since it asked."""
        if self.next_offset != expected or found <= expected:
            return False
        log.warning(
            "partition=%s offsets %d-%d hold no record (transaction markers, or removed): going on at %d",
            self.label,
            expected,
            found - 1,
            found,
        )
        self.next_offset = found
        self._active_at = time.monotonic()
        return True

    @property
    def at_redo_end(self) -> bool:
        """The claimed range is complete: flush it now, before ingesting past it."""
        return self.redo_until is not None and self._last >= self.redo_until

    @property
    def full(self) -> bool:
        """As many records and rejections buffered as the Ingestor's bound (--max-pending-records):
        flush before the next record (a flush may end at any record). A chunk holds far more: up to
        5,000 records, and a 300-byte lz4 record of 65,536 empty messages buffers ~12 MB of rejections."""
        return self.ingestor.pending_records >= self.ingestor.max_pending_records

    @property
    def can_flush(self) -> bool:
        return self._first is not None and (self.redo_until is None or self.at_redo_end)

    def take_flush(self) -> PartitionFlush:
        """Everything ingested since the last flush, as one exact-range flush (call when can_flush)."""
        if self._first is None:
            msg = f"{self.label}: nothing to flush"
            raise ValueError(msg)
        try:
            batch = self.ingestor.take()
            partials = compute(batch)
        except Exception:
            # the records taken are gone from the Ingestor: read the range again rather than let
            # the next flush record offsets whose records were never written
            self.next_offset, self._first, self._messages = self._first, None, 0
            self.ingestor.sequences = restore(self._before)
            raise
        position = dataclasses.replace(
            self.claimed, first_offset=self._first, last_offset=self._last, sequences_before=self._before
        )
        flush = PartitionFlush(position, partials, batch.records, self._messages)
        self._before = snapshot(self.ingestor.sequences)
        self.ingestor.sequences = restore(self._before)
        self._first, self._messages, self.redo_until = None, 0, None
        return flush
