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

from pipelines.firehose.codec import DecodedMessage, Limits, MessageDecoder, Rejection
from pipelines.firehose.protocol import MAX_FUTURE_NS, RejectReason, TopicKind
from pipelines.firehose.sequence import SequenceTracker, Verdict
from pipelines.keys import KeyHasher
from pipelines.windows.batch import Batch, BatchBuilder, PendingMessages
from pipelines.windows.tumbling import TumblingWindows

log = logging.getLogger(__name__)

NoticeCheck = Callable[[DecodedMessage], list[Rejection]]


@dataclasses.dataclass(slots=True)
class IngestStats:
    """Running totals since start (what logs, metrics and status report)."""

    messages: int = 0
    records: int = 0
    lost: int = 0
    rejected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


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
    ) -> None:
        self.windows = windows or TumblingWindows()
        self.decoder = MessageDecoder(limits)
        self.sequences = SequenceTracker()
        self.clock = clock
        self.notice_check = notice_check
        self.builder = BatchBuilder(self.windows, hasher or KeyHasher(), max_future_ns, clock)
        self.stats = IngestStats()
        self._pending = PendingMessages()
        self._lock = threading.Lock()

    def ingest(self, frames: Sequence[bytes], received_ns: int | None = None) -> None:
        received = self.clock() if received_ns is None else received_ns
        result = self.decoder.decode(frames)
        if isinstance(result, Rejection):
            self._reject(received, result)
            return
        env = result.envelope
        observation = self.sequences.observe(env.node, env.boot, env.seq)
        if observation.verdict is Verdict.DUPLICATE:
            self._reject(received, Rejection(RejectReason.DUPLICATE, f"seq {env.seq}", env.node, 1))
            return
        if result.kind is TopicKind.NOTICE and self.notice_check is not None:
            result.rejected.extend(self.notice_check(result))
        with self._lock:
            pending = self._pending
            pending.node.append(env.node)
            pending.received_ns.append(received)
            pending.lost.append(observation.lost)
            pending.kind.append(result.kind)
            pending.record_count.append(len(result.records))
            pending.records[result.kind].extend(result.records)
            for rejection in result.rejected:
                pending.rejections.append((received, env.node, rejection.reason.value, rejection.count))
        self.stats.messages += 1
        self.stats.lost += observation.lost
        if observation.lost:
            log.warning("sequence gap node=%s boot=%d lost=%d", env.node, env.boot, observation.lost)
        for rejection in result.rejected:
            self.stats.rejected[rejection.reason.value] += rejection.count

    def _reject(self, received: int, rejection: Rejection) -> None:
        with self._lock:
            self._pending.rejections.append(
                (received, rejection.node, rejection.reason.value, rejection.count)
            )
        first = self.stats.rejected[rejection.reason.value] == 0
        self.stats.rejected[rejection.reason.value] += rejection.count
        if first:
            log.warning(
                "rejected reason=%s node=%s detail=%s (further rejections of this reason are counted, "
                "not logged)",
                rejection.reason.value,
                rejection.node or "?",
                rejection.detail,
            )

    def take(self) -> Batch:
        """Everything received since the last take(), as columns."""
        with self._lock:
            pending, self._pending = self._pending, PendingMessages()
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
        return batch
