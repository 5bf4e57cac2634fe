"""Range planning: which records of the log the next flush takes, decoded and aggregated.

The flusher (pipelines.wal.flusher) asks for the next range in log order and
sends it; this module decides what that range is and computes its partial
rollups, under the token `<wal id>-<start>-<end>-<digest>`:

- a range in flight at a crash is read back with the same bounds, so it gets
  the same token and ClickHouse drops whatever part of it had landed;
- a backlog is read back from the log, at most `flush_max_bytes` of messages
  per range, so memory holds one bounded range however long an outage lasts;
- once a read-back reaches the end of the log, records are decoded as they are
  logged (the live range, fed by the writer's tap on the appender thread): the
  same records and the same chained digest, so the token a read-back would
  give. When a write fails the live range is closed, and what arrives
  meanwhile is read back until caught up.

Every range is fsynced before it is planned: ClickHouse never counts what the
log could lose.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import pyarrow as pa

from pipelines.delivery import Delivery, DeliveryStats, Shipment
from pipelines.firehose.sequence import SequencePosition
from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from pipelines.wal.checkpoint import Checkpoint, InFlight
from pipelines.wal.format import LoggedRecords, WalRecord
from pipelines.wal.reader import RangeRead, WalReader, chain_crcs, seal_digest
from pipelines.wal.writer import WalWriter
from pipelines.windows.batch import Batch, PendingMessages

log = logging.getLogger(__name__)

# Sequence positions of publishers silent this long are dropped from the checkpoint.
SEQUENCE_TTL_NS: Final = 7 * 24 * 3600 * 1_000_000_000


class ArchiveOutput(Protocol):
    """An extra table written in the same flush, under the same token (the raw-event archive)."""

    name: str

    def setup(self) -> None: ...

    def build(self, records: Sequence[WalRecord], accepted: Sequence[bool]) -> pa.Table:
        """The rows of the records the ingestor accepted (`accepted[i]` for `records[i]`)."""
        ...

    def write(self, table: pa.Table, token: str) -> int: ...


@dataclasses.dataclass(slots=True)
class Flight:
    """A planned range and its shipment, kept until it is committed."""

    range: InFlight
    shipment: Shipment
    sequences: list[SequencePosition]
    live: bool = False
    planned_at: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def token(self) -> str:
        return self.shipment.token


@dataclasses.dataclass(slots=True)
class LiveRange:
    """Records [start, end) decoded as they were logged, not yet taken by a flush."""

    start: int
    end: int
    chain: int = 0  # the records' CRCs chained, as a read-back of [start, end) would
    last_received_ns: int = 0
    open: bool = True  # False: ClickHouse writes fail; records from `end` on are read back

    def close(self, reason: str) -> None:
        if self.open:
            self.open = False
            log.info("WAL live decoding paused (%s); reading the log back until caught up", reason)


@dataclasses.dataclass(slots=True)
class FlushStats(DeliveryStats):
    """What the WAL's flushes delivered, and how their ranges were decoded."""

    live_ranges: int = 0  # flushes of records decoded as they were logged
    read_back_ranges: int = 0  # flushes of records read back from the log


def _last_received(read: RangeRead) -> int:
    return read.records[-1].received_ns if read.records else 0


class RangePlanner:
    def __init__(
        self,
        writer: WalWriter,
        checkpoint: Checkpoint,
        ingestor: Ingestor,
        delivery: Delivery,
        *,
        flush_max_bytes: int,
        archive: ArchiveOutput | None = None,
        stats: FlushStats,
        took: Callable[[Batch], None] = lambda batch: None,
    ) -> None:
        self.writer = writer
        self.reader = WalReader(writer.directory)
        self.checkpoint = checkpoint
        self.ingestor = ingestor
        self.delivery = delivery
        self.flush_max_bytes = flush_max_bytes
        self.archive = archive
        self.took = took
        self.stats = stats
        # The archive stores the raw frames, which only a read-back has.
        self.decode_on_receive = archive is None
        self.live: LiveRange | None = None
        self.live_lock = threading.Lock()
        # (node, boot) -> (last seq, when it last moved, every run of seqs seen)
        self._seen: dict[tuple[str, int], tuple[int, int, tuple[tuple[int, int], ...]]] = {}

    def restore_sequences(self) -> None:
        """Resume the publishers' sequences from the checkpoint (missed messages count as lost)."""
        self.ingestor.sequences.restore_positions(self.checkpoint.sequences)
        for position in self.checkpoint.sequences:
            self._seen[(position.node, position.boot)] = (position.last_seq, position.seen_ns, position.runs)

    def paces_receiver(self) -> bool:
        """True while records are decoded as logged (the receiver must wait for room then)."""
        live = self.live
        return live is not None and live.open

    def close_live(self, reason: str) -> None:
        with self.live_lock:
            if self.live is not None:
                self.live.close(reason)

    def logged(self, records: LoggedRecords) -> None:
        """Appender thread (the writer's tap): decode records now in the log into the live range."""
        with self.live_lock:
            live = self.live
            if live is None or not live.open:
                return
            # records logged before the range opened are left to a read-back
            skip = live.end - records.first
            if skip < 0:
                # Cannot happen while the tap sees every write; if it did, the log has them.
                live.close(f"records not contiguous at {live.end}, got {records.first}")
                return
            if skip >= len(records.crcs):
                return
            frames, received, crcs = records.frames, records.received_ns, records.crcs
            if skip:
                frames, received, crcs = frames[skip:], received[skip:], crcs[skip:]
            self.ingestor.ingest_many(frames, received)
            live.chain = chain_crcs(live.chain, crcs)
            live.end += len(crcs)
            live.last_received_ns = received[-1]

    def go_live(self) -> None:
        """With everything in the log flushed: decode what is logged next as it comes."""
        if not self.decode_on_receive or self.live is not None:
            return
        with self.live_lock:
            written = self.writer.written
            if written == self.checkpoint.flushed:
                self.live = LiveRange(written, written)

    def plan(self, limit: int) -> Flight | None:
        """The next range in log order up to `limit` (None if there is none yet), not yet recorded."""
        start = self.checkpoint.flushed
        inflight = self.checkpoint.inflight
        live = self.live
        if live is not None and live.start != start:
            msg = f"the live range starts at {live.start}, the log is flushed to {start}"
            raise AssertionError(msg)
        if live is not None and not live.open and live.end == live.start:
            self.live = live = None  # closed before it held a record: the rest is read back
        if inflight is not None and inflight.start == start:
            read = self.reader.read(start, min(inflight.end, limit))
            if read.digest != inflight.digest or read.end != inflight.end:
                log.warning(
                    "WAL range in flight at the crash reads back differently (log tail lost?); "
                    "it gets a new token planned=%s read_end=%d",
                    inflight,
                    read.end,
                )
            return self._read_back(read, catch_up=False)
        if live is not None:
            return self._take_live()
        if limit <= start:
            return None
        # What ClickHouse counts must never be lost by the log, so the range is
        # made durable before it is planned (one fsync per flush in every policy).
        self.writer.sync()
        read = self.reader.read(start, limit, max_bytes=self.flush_max_bytes)
        return self._read_back(read, catch_up=read.end >= limit)

    def _read_back(self, read: RangeRead, *, catch_up: bool) -> Flight:
        """A range read back from the log; with catch_up, read on to the log's end and go live there.

        The catch-up holds the tap while it reads the last records, so that no
        record is both read back and decoded as logged; the log's end cannot
        move past what the tap will hand over next.
        """
        accepted = self._replay(read.records)
        if not (catch_up and self.decode_on_receive and self.live is None):
            pending = self.ingestor.detach()
            sequences = self._sequence_positions(_last_received(read))
        else:
            with self.live_lock:
                written = self.writer.written
                tail = len(read.records)
                self.reader.extend(read, written, max_bytes=read.bytes + self.flush_max_bytes // 4)
                accepted += self._replay(read.records[tail:])
                if read.end == written:
                    self.live = LiveRange(written, written)
                pending = self.ingestor.detach()
                sequences = self._sequence_positions(_last_received(read))
            self.writer.sync()  # the records read on, too, are durable before they are planned
        self.stats.read_back_ranges += 1
        span = InFlight(read.start, read.end, read.digest)
        extra = {}
        if self.archive is not None:
            extra[self.archive.name] = self.archive.build(read.records, accepted)
        return self._flight(pending, span, sequences, len(read.records), extra)

    def _replay(self, records: Sequence[WalRecord]) -> list[bool]:
        """Each record through the ingestor; whether each message was accepted (what the archive keeps)."""
        return self.ingestor.ingest_many(
            [record.frames for record in records], [record.received_ns for record in records]
        )

    def _take_live(self) -> Flight | None:
        """Cut the live range where the tap is now; None if it holds no record."""
        with self.live_lock:
            live = self.live
            if live is None or live.end == live.start:
                return None
            pending = self.ingestor.detach()
            sequences = self._sequence_positions(live.last_received_ns)
            span = InFlight(live.start, live.end, seal_digest(live.chain, live.start, live.end))
            self.live = LiveRange(live.end, live.end) if live.open else None
        # Durable before planned, as for a read-back: everything tapped is written, so this covers it.
        self.writer.sync()
        self.stats.live_ranges += 1
        flight = self._flight(pending, span, sequences, span.end - span.start, {})
        flight.live = True
        return flight

    def _flight(
        self,
        pending: PendingMessages,
        span: InFlight,
        sequences: list[SequencePosition],
        messages: int,
        extra: dict[str, pa.Table],
    ) -> Flight:
        batch = self.ingestor.build(pending)
        self.took(batch)
        token = f"{self.checkpoint.wal_id}-{span.start}-{span.end}-{span.digest:08x}"
        partials = {**compute(batch), **extra}
        shipment = self.delivery.shipment(token, partials, records=batch.records, messages=messages)
        return Flight(range=span, shipment=shipment, sequences=sequences)

    def _sequence_positions(self, now_ns: int) -> list[SequencePosition]:
        held: set[tuple[str, int]] = set()
        for publisher in self.ingestor.sequences.publishers():
            key = (publisher.node, publisher.boot)
            held.add(key)
            previous = self._seen.get(key)
            seen = now_ns if previous is None or previous[0] != publisher.last_seq else previous[1]
            self._seen[key] = (publisher.last_seq, seen, publisher.run_bounds())
        horizon = now_ns - SEQUENCE_TTL_NS
        self._forget_unheld(held, horizon)
        return [
            SequencePosition(node, boot, last_seq, seen, runs)
            for (node, boot), (last_seq, seen, runs) in self._seen.items()
            if seen >= horizon
        ]

    def _forget_unheld(self, held: set[tuple[str, int]], horizon: int) -> None:
        """Bound what the checkpoint keeps beyond the tracker to the tracker's own bound.

        Envelopes under made-up names, a few per flush, each stayed here (and in every checkpoint,
        written twice per flush, and back in the tracker after a restart) for SEQUENCE_TTL_NS:
        without a bound, one sender grew the checkpoint by what it sent for a week. What the
        tracker holds is kept whole (its runs are what judges duplicates after a restart); of the
        rest, the most recently moved, up to the tracker's bound.
        """
        room = max(0, self.ingestor.sequences.max_incarnations - len(held))
        unheld = [(entry[1], key) for key, entry in self._seen.items() if key not in held]
        kept = {key for seen, key in sorted(unheld, reverse=True)[:room] if seen >= horizon}
        for _, key in unheld:
            if key not in kept:
                del self._seen[key]
