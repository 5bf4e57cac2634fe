"""The receive side of the rollup core, shared by every runner.

An Ingestor takes raw firehose messages one at a time (ingest), checks their
sequence per publisher, and buffers decoded records; take() hands everything
received since the previous call to the flush side as a columnar Batch. It
never raises on bad input: every rejection is counted with its reason.

Thread safety: one thread may call ingest() while another calls take().
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from pipelines.firehose.codec import DecodedMessage, EnvelopeFields, Limits, MessageDecoder, Rejection
from pipelines.firehose.protocol import MAX_FUTURE_NS, MAX_PAST_NS, RejectReason, TopicKind
from pipelines.firehose.sequence import IN_ORDER, GapLog, Observation, SequenceTracker, Verdict
from pipelines.keys import KeyHasher
from pipelines.observe.throttle import LogThrottle
from pipelines.settings import FirehoseSettings, WorkerSettings
from pipelines.windows.batch import Batch, BatchBuilder, PendingMessages
from pipelines.windows.tumbling import TumblingWindows

log = logging.getLogger(__name__)

# Verifies a notice message's records: removes the ones that fail from
# message.records and returns a rejection for them (pipelines.security.notices).
NoticeCheck = Callable[[DecodedMessage], list[Rejection]]

# Records buffered between two take() calls before the receive side waits
# (see wait_for_room): the bound on what a stalled flusher lets pile up. A message
# without records and a rejection count as one each: each is a row kept until the
# flush, and a flood of them, uncounted, was never held back.
DEFAULT_MAX_PENDING_RECORDS = 2_000_000
MAX_RECEIVE_NS: Final = (1 << 63) - 1


@dataclasses.dataclass(slots=True)
class IngestStats:
    """Running totals since start (what logs, metrics and status report)."""

    messages: int = 0
    records: int = 0
    lost: int = 0
    duplicates: int = 0
    # messages received (their sequence advanced) but refused as a whole
    rejected_messages: int = 0
    rejected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class ReplayClock:
    """An Ingestor's clock for messages ingested after the fact: the receive time of the latest one.

    A write-ahead log read back, a Kafka partition, an archive being rebuilt:
    each message carries the time it was first received, and judging its
    timestamps by that time (not by now) gives the verdicts of the first pass.
    `Ingestor.ingest_many` sets it.
    """

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


class Ingestor:
    def __init__(
        self,
        windows: TumblingWindows | None = None,
        *,
        limits: Limits | None = None,
        hasher: KeyHasher | None = None,
        max_future_ns: int = MAX_FUTURE_NS,
        clock: Callable[[], int] = time.time_ns,
        notice_check: NoticeCheck | None = None,
        max_past_ns: int = MAX_PAST_NS,
        max_pending_records: int = DEFAULT_MAX_PENDING_RECORDS,
    ) -> None:
        self.windows = windows or TumblingWindows()
        self.decoder = MessageDecoder(limits)
        self.sequences = SequenceTracker()
        self.clock = clock
        self.notice_check = notice_check
        self.builder = BatchBuilder(self.windows, hasher or KeyHasher(), max_future_ns, max_past_ns)
        self.stats = IngestStats()
        self.max_pending_records = max_pending_records
        self.pending_records = 0
        self._room = threading.Event()
        self._room.set()
        self._throttle = LogThrottle()
        self._gaps = GapLog(log)
        self._pending = PendingMessages()
        self._lock = threading.Lock()

    def ingest(self, frames: Sequence[bytes], received_ns: int | None = None) -> bool:
        """Take one received message; True if it was accepted (its records may still be refused one
        by one), False if it was refused as a whole or dropped as a duplicate."""
        received = self.clock() if received_ns is None else _receive_time(received_ns)
        return self._ingest_many([frames], [received])[0]

    def ingest_many(self, messages: Sequence[Sequence[bytes]], received_ns: Sequence[int]) -> list[bool]:
        """Ingest messages in order, the n-th received at received_ns[n] (just now, or earlier: a
        ReplayClock is set to the last one's time); whether each was accepted, as ingest().

        The way to hand over many messages: their analytics envelopes are read in one native
        call, and the payloads of a run of accepted ones decoded in another, where one call per
        message cost several times the decoding of a small one.
        """
        received = [_receive_time(ns) for ns in received_ns]
        accepted = self._ingest_many(messages, received)
        if received and isinstance(self.clock, ReplayClock):
            self.clock.now_ns = received[-1]
        return accepted

    def _ingest_many(self, messages: Sequence[Sequence[bytes]], received: list[int]) -> list[bool]:
        try:
            envelopes = self.decoder.analytics_envelopes(messages)
            judged_natively = True
        except Exception:  # bad input must never stop the receive loop: each is judged on its own
            envelopes, judged_natively = [None] * len(messages), False
        accepted = [False] * len(messages)
        run = _AnalyticsRun()
        observe = self.sequences.observe
        for at, read in enumerate(envelopes):
            if read is None:
                self._add_run(run, accepted)
                accepted[at] = self._ingest(messages[at], received[at], native=not judged_natively)
                continue
            node, boot, seq = read[0], read[1], read[2]
            observation = observe(node, boot, seq)
            if observation is not IN_ORDER:
                if observation.verdict is Verdict.DUPLICATE:
                    self._add_run(run, accepted)  # its rejection after those of the messages before it
                if not self._observed(observation, node, boot, seq, received[at]):
                    continue
            run.add(at, read, messages[at][2], received[at], observation.lost)
        self._add_run(run, accepted)
        return accepted

    def _add_run(self, run: _AnalyticsRun, accepted: list[bool]) -> None:
        """Add a run of accepted analytics messages, their payloads decoded natively in one call;
        one the native core declines is decoded the reference way in its place, in order."""
        while run.at:
            with self._lock:
                try:
                    added = self._pending.add_analytics_payloads(
                        run.payloads,
                        run.count,
                        node=run.node,
                        boot=run.boot,
                        sent_ns=run.sent,
                        received_ns=run.received,
                        lost=run.lost,
                    )
                except Exception:  # each is judged the reference way instead (never the loop stopped)
                    added = 0
                counts = run.count[:added]
                # an empty message is a row of the batch too: counted as one, as a rejection is
                self.pending_records += sum(counts) + counts.count(0)
                if self.pending_records >= self.max_pending_records:
                    self._room.clear()
            self.stats.messages += added
            for at in run.at[:added]:
                accepted[at] = True
            if added == len(run.at):
                break
            accepted[run.at[added]] = self._add_declined(run, added)
            run.drop_through(added)
        run.clear()

    def _add_declined(self, run: _AnalyticsRun, index: int) -> bool:
        """The run's message at `index`, whose payload the native core declined, decoded the
        reference way (its sequence is observed already)."""
        read = (run.node[index], run.boot[index], run.seq[index], run.sent[index], run.count[index])
        received, lost = run.received[index], run.lost[index]
        try:
            result = self.decoder.declined_analytics(read, run.payloads[index])
        except Exception as exc:  # bad input must never stop the receive loop
            result = Rejection(
                RejectReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:200], read[0], read[4]
            )
        if isinstance(result, Rejection):
            self._refuse_received(received, result, read[1], lost)
            return False
        self._accept(result, received, lost)
        return True

    def _ingest(self, frames: Sequence[bytes], received: int, *, native: bool = True) -> bool:
        """One message decoded on its own (`native` off: its analytics envelope was declined
        natively already, and is not read natively a second time)."""
        try:
            result = self.decoder.decode(frames, native=native)
        except Exception as exc:  # bad input must never stop the receive loop
            result = Rejection(RejectReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:200])
        if isinstance(result, Rejection):
            if result.position is not None:
                self._reject_received(received, result, *result.position)
            else:
                self._reject(received, result)
            return False
        env = result.envelope
        observation = self.sequences.observe(env.node, env.boot, env.seq)
        if not self._observed(observation, env.node, env.boot, env.seq, received):
            return False
        self._accept(result, received, observation.lost)
        return True

    def _observed(self, observation: Observation, node: str, boot: int, seq: int, received: int) -> bool:
        """Count what an observation says; False for a duplicate (dropped, counted)."""
        if observation.verdict is Verdict.DUPLICATE:
            self.stats.duplicates += 1
            self._reject(received, Rejection(RejectReason.DUPLICATE, f"seq {seq}", node, 1))
            return False
        self._count_gap(observation, node, boot, seq)
        return True

    def _accept(self, result: DecodedMessage, received: int, lost: int) -> None:
        """A decoded message whose sequence was observed (not a duplicate), into the pending batch."""
        env = result.envelope
        if result.kind is TopicKind.NOTICE and self.notice_check is not None:
            result.rejected.extend(self._checked_notices(result, self.notice_check))
        with self._lock:
            pending = self._pending
            pending.add(
                node=env.node,
                boot=env.boot,
                sent_ns=env.sent,
                received_ns=received,
                lost=lost,
                kind=result.kind,
                records=result.records,
            )
            for rejection in result.rejected:
                pending.rejections.append((received, env.node, rejection.reason.value, rejection.count))
            self.pending_records += len(result.records) or 1
            if self.pending_records >= self.max_pending_records:
                self._room.clear()
        self.stats.messages += 1
        for rejection in result.rejected:
            self.stats.rejected[rejection.reason.value] += rejection.count
            self._log_rejection(rejection)

    def wait_for_room(self, timeout_s: float) -> bool:
        """Block while max_pending_records are buffered (until take() or timeout); True if there is room.

        A receive loop calls this before reading its sockets: while the flush
        side is stalled the sockets are not read, ZeroMQ queues up to its
        high-water mark and then drops, and the drops show as sequence gaps.
        """
        return self._room.wait(timeout_s)

    def _count_gap(self, observation: Observation, node: str, boot: int, seq: int) -> None:
        self.stats.lost += observation.lost
        self._gaps.report(observation, node, boot, seq, self.stats.lost)

    def _log_rejection(self, rejection: Rejection) -> None:
        held = self._throttle.allow(rejection.reason)
        if held is not None:
            log.warning(
                "rejected reason=%s node=%s detail=%s total=%d (not logged since the last line of this "
                "reason: %d)",
                rejection.reason.value,
                rejection.node or "?",
                rejection.detail,
                self.stats.rejected[rejection.reason.value],
                held,
            )

    def _reject_received(self, received: int, rejection: Rejection, boot: int, seq: int) -> None:
        """A message refused as a whole after its envelope was read.

        It advances its publisher's sequence like any received message: PROTOCOL.md
        counts as lost only what never arrived, and a refused message did arrive.
        """
        observation = self.sequences.observe(rejection.node, boot, seq)
        if self._observed(observation, rejection.node, boot, seq, received):
            self._refuse_received(received, rejection, boot, observation.lost)

    def _refuse_received(self, received: int, rejection: Rejection, boot: int, lost: int) -> None:
        """A message refused as a whole whose sequence was observed (not a duplicate)."""
        with self._lock:
            self._pending.add_rejected(node=rejection.node, boot=boot, received_ns=received, lost=lost)
        self.stats.rejected_messages += 1
        self._reject(received, rejection)

    @staticmethod
    def _checked_notices(message: DecodedMessage, check: NoticeCheck) -> list[Rejection]:
        """The check's rejections; should the check itself fail, the message's notices are
        refused (counted), never the worker stopped: the same notice would come back at every
        restart as the log replays it."""
        try:
            return check(message)
        except Exception as exc:  # bad input must never stop the receive loop
            refused = Rejection(
                RejectReason.INTERNAL_ERROR,
                f"notice check: {type(exc).__name__}: {exc}"[:200],
                message.envelope.node,
                len(message.records),
            )
            message.records = []
            return [refused]

    def _reject(self, received: int, rejection: Rejection) -> None:
        with self._lock:
            self._pending.rejections.append(
                (received, rejection.node, rejection.reason.value, rejection.count)
            )
            # a rejection is buffered too (one row), so a flood of bad input is bounded as well
            self.pending_records += 1
            if self.pending_records >= self.max_pending_records:
                self._room.clear()
        self.stats.rejected[rejection.reason.value] += rejection.count
        self._log_rejection(rejection)

    def take(self) -> Batch:
        """Everything received since the last take(), as columns."""
        return self.build(self.detach())

    def detach(self) -> PendingMessages:
        """Everything received since the last take(), as received (cheap: a swap).

        For a caller that must cut the stream at an exact message (the WAL
        flusher, under its own lock) and build the batch outside that lock.
        """
        with self._lock:
            pending, self._pending = self._pending, PendingMessages()
            self.pending_records = 0
            self._room.set()
        return pending

    def build(self, pending: PendingMessages) -> Batch:
        """Detached messages as columns (and the rejections found while building counted)."""
        if not len(pending):
            return Batch.empty()
        batch = self.builder.build(pending)
        self.stats.records += int(batch.messages["records"].sum())
        late_rejections = batch.rejections.height - len(pending.rejections)
        if late_rejections > 0:
            for reason, count in (
                batch.rejections.tail(late_rejections).select("reason", "rejected").iter_rows()
            ):
                self.stats.rejected[reason] += count
                held = self._throttle.allow(reason)
                if held is not None:
                    log.warning(
                        "rejected reason=%s count=%d (at flush; not logged since: %d)", reason, count, held
                    )
        return batch


class _AnalyticsRun:
    """Accepted analytics messages whose payloads are still to decode, as parallel columns."""

    __slots__ = ("at", "boot", "count", "lost", "node", "payloads", "received", "sent", "seq")

    def __init__(self) -> None:
        self.at: list[int] = []  # each message's index in the hand-over
        self.node: list[str] = []
        self.boot: list[int] = []
        self.seq: list[int] = []
        self.sent: list[int] = []
        self.count: list[int] = []
        self.payloads: list[bytes] = []
        self.received: list[int] = []
        self.lost: list[int] = []

    def add(self, at: int, read: EnvelopeFields, payload: bytes, received: int, lost: int) -> None:
        node, boot, seq, sent, count = read
        self.at.append(at)
        self.node.append(node)
        self.boot.append(boot)
        self.seq.append(seq)
        self.sent.append(sent)
        self.count.append(count)
        self.payloads.append(payload)
        self.received.append(received)
        self.lost.append(lost)

    def drop_through(self, index: int) -> None:
        """Forget the messages up to and including `index` (added, or added in their place)."""
        columns = (self.at, self.node, self.boot, self.seq, self.sent, self.count, self.payloads)
        for column in (*columns, self.received, self.lost):
            del column[: index + 1]

    def clear(self) -> None:
        self.drop_through(len(self.at) - 1)


def _receive_time(ns: int) -> int:
    """A receive time the batch's int64 columns can hold. Only a transport can be this wrong (a
    Kafka record's timestamp is whatever its producer set, -10**13 ms included): kept as it is,
    the batch built from it raised and took every message pending with it."""
    return min(max(ns, 0), MAX_RECEIVE_NS)


def build_ingestor(
    firehose: FirehoseSettings,
    worker: WorkerSettings,
    *,
    notice_check: NoticeCheck | None = None,
    replay: bool = False,
    hasher: KeyHasher | None = None,
) -> Ingestor:
    """The Ingestor every runner uses; with replay, its clock is a ReplayClock (see Ingestor.ingest_many)."""
    return Ingestor(
        TumblingWindows(worker.window_seconds),
        limits=Limits(firehose.max_message_bytes, firehose.max_records),
        hasher=hasher or KeyHasher(worker.key_hash_salt.get_secret_value().encode()),
        max_future_ns=firehose.max_future_s * 1_000_000_000,
        max_past_ns=firehose.max_past_s * 1_000_000_000,
        max_pending_records=worker.max_pending_records,
        notice_check=notice_check,
        clock=ReplayClock() if replay else time.time_ns,
    )
