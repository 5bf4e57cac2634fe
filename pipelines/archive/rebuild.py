"""Recompute the rollups of a time range from the archive, replacing what is stored.

The range is widened to whole hours (the `_1h` tables hold whole hours, so a
part of an hour cannot be replaced on its own). Then:

1. every archived message with a record in the range is read (by its event
   span, so late records count) and run through the same Ingestor and rollup
   code as a worker, with the keys the archive hashed read back as the same
   hashes (ArchivedKeyHasher) and the receive time as the clock;
2. the partial rows of windows inside the range are kept (a message may
   also hold records of windows outside it);
3. the state rows of the range are deleted, and the recomputed rows inserted.
   Once the delete has started, a write that fails for a reason that does not
   prove its rows bad (a cancelled query, an outage) is retried with backoff
   under the same token, rather than leaving the range empty.

Only the event-time rollups (traffic, rate_limit_hits, token_churn,
config_changes) are rebuilt; ingest_health and ingest_rejections describe
what the firehose delivered at the time and are not in the archive.

The archive must cover the range: rebuilding a range that starts before the
archive's first message would replace complete windows with partial ones, so
it is refused unless `force` is given. Run it for ranges no worker is still
writing to (with embedded ClickHouse, stop the worker: chDB has one process
per data directory).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Final, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.archive.progress import NoProgress, Progress
from pipelines.archive.sanitize import ArchivedKeyHasher
from pipelines.archive.timerange import TimeRange, format_instant
from pipelines.delivery import Backoff, RetryPolicy
from pipelines.errors import PipelineError
from pipelines.firehose.protocol import ENCODING_MSGPACK, PROTOCOL_VERSION
from pipelines.firehose.sequence import Observation, SequenceTracker
from pipelines.ingest import Ingestor, build_ingestor
from pipelines.rollups import compute
from pipelines.settings import FirehoseSettings, WorkerSettings
from sinks.clickhouse.archive import ArchivedMessage, EventsArchive
from sinks.clickhouse.contract import WINDOW_COLUMN
from sinks.clickhouse.replace import delete_windows
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENT_TIME_ROLLUPS: Final = ("traffic", "rate_limit_hits", "token_churn", "config_changes")
ARCHIVED_MESSAGE_LIMIT: Final = 1 << 31


class RebuildError(PipelineError):
    pass


class ArchivedSequences(SequenceTracker):
    """Duplicates dropped as ever, but a hole in the seqs is not a loss here.

    The archive holds only some of a publisher's messages (no heartbeats, no
    rejected ones, only those with events in the range), so its seqs have holes
    that would be logged as "sequence gap" about losses that never happened;
    loss is not rebuilt anyway (ingest_health is not). Duplicates still matter:
    the same message archived twice (two workers on one firehose, a log drained
    twice) is read in different chunks, and only its seq says it is one message.
    """

    def observe(self, node: str, boot: int, seq: int) -> Observation:
        seen = super().observe(node, boot, seq)
        return dataclasses.replace(seen, lost=0) if seen.lost else seen


@dataclasses.dataclass(slots=True)
class RebuildSummary:
    from_s: int
    to_s: int
    messages: int = 0
    records: int = 0
    rows_deleted: int = 0
    rows_written: int = 0


def events_overlapping(from_s: int, to_s: int) -> str:
    return f"last_event >= toDateTime({int(from_s)}) AND first_event < toDateTime({int(to_s)})"


class Rebuilder:
    def __init__(
        self,
        sink: ClickHouseSink,
        archive: EventsArchive,
        firehose: FirehoseSettings,
        worker: WorkerSettings,
        *,
        retry: RetryPolicy | None = None,
        give_up_after_s: float = 300.0,
        progress: Progress | None = None,
    ) -> None:
        self.sink = sink
        self.archive = archive
        self.firehose = firehose
        self.worker = worker
        self.retry = retry or RetryPolicy()
        self.give_up_after_s = give_up_after_s
        self.progress = progress or NoProgress()
        self._envelope = msgspec.msgpack.Encoder()

    def run(self, span: TimeRange, *, force: bool = False) -> RebuildSummary:
        from_s, to_s = span.hours()
        summary = RebuildSummary(from_s, to_s)
        self._check_coverage(from_s, force=force)
        partials = self._recompute(summary)
        self.progress.phase("deleting the range's rows")
        # Deleting windows again is harmless, so a retried delete may repeat (its count then
        # only has what the retry found).
        summary.rows_deleted = self._retrying(
            "delete", lambda: delete_windows(self.sink, EVENT_TIME_ROLLUPS, from_s, to_s)
        )
        token = f"rebuild-{uuid.uuid4().hex}"
        self.progress.phase("inserting the rebuilt rollups", total=len(partials))
        for name, table in partials.items():
            # The same token on every attempt: an insert that landed before its error is not added twice.
            summary.rows_written += self._retrying(
                f"insert {name}", functools.partial(self.sink.write, {name: table}, token)
            )
            self.progress.advance()
        log.info(
            "rebuilt from=%s to=%s messages=%d records=%d state_rows_deleted=%d partial_rows_written=%d",
            format_instant(from_s * 1_000_000_000),
            format_instant(to_s * 1_000_000_000),
            summary.messages,
            summary.records,
            summary.rows_deleted,
            summary.rows_written,
        )
        return summary

    def _retrying(self, action: str, call: Callable[[], T]) -> T:
        """call(), retried with backoff while ClickHouse is unavailable, for up to give_up_after_s.

        After the delete, giving up at the first cancelled query or timeout would
        leave the range empty until someone runs the rebuild again.
        """
        deadline = time.monotonic() + self.give_up_after_s
        backoff = Backoff(self.retry)
        while True:
            try:
                return call()
            except SinkUnavailableError as exc:
                if time.monotonic() + backoff.delay > deadline:
                    msg = (
                        f"rebuild {action} still failing after {self.give_up_after_s:.0f}s: {exc}; "
                        "the archive keeps the messages: run the same rebuild again"
                    )
                    raise RebuildError(msg) from exc
                delay = backoff.failed()
                log.warning("rebuild %s failed, retrying in %.1fs: %s", action, delay, exc)
                time.sleep(delay)

    def _check_coverage(self, from_s: int, *, force: bool) -> None:
        span = self.archive.span()
        if span is None:
            msg = "the archive is empty: nothing to rebuild from (is --archive on in the workers?)"
            raise RebuildError(msg)
        if span[0] > from_s * 1_000_000_000 and not force:
            msg = (
                f"the archive starts at {format_instant(span[0])}, after the range start "
                f"{format_instant(from_s * 1_000_000_000)}: rebuilding would replace complete windows "
                "with partial ones (use --force to do it anyway)"
            )
            raise RebuildError(msg)

    def _recompute(self, summary: RebuildSummary) -> dict[str, pa.Table]:
        salt = self.worker.key_hash_salt.get_secret_value().encode()
        # The message limit guarded the transport, and every archived message passed it. Its keys,
        # hashed, are longer than most keys were: held to the limit again, a message that was just
        # under it was refused here (message_too_large) and its records lost from the rebuilt range.
        firehose = self.firehose.model_copy(update={"max_message_bytes": ARCHIVED_MESSAGE_LIMIT})
        ingestor = build_ingestor(firehose, self.worker, replay=True, hasher=ArchivedKeyHasher(salt))
        ingestor.sequences = ArchivedSequences()
        kept: dict[str, list[pa.Table]] = {name: [] for name in EVENT_TIME_ROLLUPS}
        where = events_overlapping(summary.from_s, summary.to_s)
        self.progress.phase("reading the archive (messages)", total=self.archive.count(where))
        for chunk in self.archive.messages(where):
            ingestor.ingest_many([self._frames(m) for m in chunk], [m.received_ns for m in chunk])
            summary.messages += len(chunk)
            self._take(ingestor, summary, kept)
            self.progress.advance(len(chunk))
        return {name: pa.concat_tables(tables) for name, tables in kept.items() if tables}

    def _take(self, ingestor: Ingestor, summary: RebuildSummary, kept: dict[str, list[pa.Table]]) -> None:
        batch = ingestor.take()
        summary.records += batch.records
        for name, table in compute(batch).items():
            if name not in kept or table.num_rows == 0:
                continue
            window = table.column(WINDOW_COLUMN)
            inside = pc.and_(
                pc.greater_equal(window, pa.scalar(summary.from_s, window.type)),
                pc.less(window, pa.scalar(summary.to_s, window.type)),
            )
            kept[name].append(table.filter(inside))

    def _frames(self, message: ArchivedMessage) -> list[bytes]:
        envelope = {
            "v": PROTOCOL_VERSION,
            "node": message.node,
            "boot": message.boot,
            "seq": message.seq,
            "sent": message.received_ns,
            "count": message.records,
            "enc": ENCODING_MSGPACK,
        }
        # A topic that is no ASCII text is damage: spelt with "?" it is refused by the ingestor
        # (bad_topic, counted) like any other, where encoding it strictly ended the rebuild.
        return [message.topic.encode("ascii", "replace"), self._envelope.encode(envelope), message.payload]
