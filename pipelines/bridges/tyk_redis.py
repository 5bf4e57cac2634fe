"""`tykpulse bridge tyk`: drain Tyk's analytics lists and notifications onto the firehose.

One thread, one loop: move a batch out of the analytics lists (atomically, into
processing lists), decode and publish it, release it from the processing lists
`release_delay_ms` later; listen for cluster notifications while idle; send
heartbeats.

Delivery guarantee (docs/tyk.md has the table):
- Redis -> firehose: **at least once**. An element leaves Tyk's list only
  inside the move script, which parks it in a processing list; it is released
  from there only after its batch was handed to ZeroMQ *and* `release_delay_ms`
  passed. The delay is what covers the last step: `send` only queues a message
  for ZeroMQ's I/O thread, and a process killed before that thread wrote it to
  the kernel loses it (the crash test saw this with no delay). A crash at any
  point leaves the unreleased batches in Redis; the next run's first move
  returns them and publishes them again.
- Duplicates: only after a crash (or a lost Redis connection, handled like a
  restart): the republished records are at most the batch in flight plus what
  was handed to ZeroMQ during the last `release_delay_ms`. They go out under a
  new envelope `boot` (or as new sequence numbers), so a worker counts them
  again.
- No subscriber, no drain: while nobody subscribes to `tyk.analytics`, records
  stay in Redis (where Tyk's TTL, 60 s by default, still applies).
- Undecodable elements are counted, logged once and dropped with their batch.
- Notifications: at most once (Redis pub/sub). While no worker subscribes to
  `tyk.notice.`, up to `max_held_notices` notices and `max_held_notice_bytes`
  of them are held in memory (oldest dropped first, counted) and published
  when one does. With several bridges on one Redis, only the holder of the notifications lease publishes them
  (pipelines.bridges.notification_lease); the others count them set aside.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis

from pipelines.bridges.faults import FaultInjector
from pipelines.bridges.notification_lease import NotificationLease
from pipelines.bridges.publishing import BridgePublisher
from pipelines.bridges.tyk_lists import ENCODING_PROTOBUF, AnalyticsListStore, HeldBatch
from pipelines.bridges.tyk_notifications import POLL_LIMIT, Notice, NotificationListener, notice_from_wire
from pipelines.bridges.tyk_protobuf import decode_protobuf
from pipelines.bridges.tyk_records import FirehoseConverter, TykAnalyticsRecord, decode_msgpack
from pipelines.errors import TykDecodeError
from pipelines.firehose.protocol import NOTICE_PREFIX, TOPIC_ANALYTICS
from pipelines.observe.throttle import LogThrottle
from sinks.redact import redact

log = logging.getLogger(__name__)

_MAX_BACKOFF_S: Final = 10.0
_DECODERS: Final[dict[str, Callable[[bytes], TykAnalyticsRecord]]] = {
    "msgpack": decode_msgpack,
    ENCODING_PROTOBUF: decode_protobuf,
}

# Named points of a cycle, for fault injection (pipelines.bridges.faults).
AFTER_MOVE: Final = "after_move"
AFTER_PUBLISH: Final = "after_publish"
AFTER_RELEASE: Final = "after_release"


@dataclasses.dataclass(slots=True)
class BridgeStats:
    moved: int = 0
    recovered: int = 0
    published: int = 0
    too_large: int = 0
    undecodable: int = 0
    # lists left undrained by one move because a key of theirs held another type (a hostile writer)
    skipped_lists: int = 0
    notices: int = 0
    bad_notices: int = 0
    dropped_notices: int = 0
    # received while another bridge holds the notifications lease (it publishes them)
    set_aside_notices: int = 0
    redis_errors: int = 0

    def readings(self) -> dict[str, float | dict[str, float]]:
        """The counters for the metrics endpoint."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True, slots=True)
class DrainConfig:
    batch: int = 2000
    message_records: int = 500
    poll_interval_s: float = 0.2
    release_delay_ms: int = 250
    max_held_notices: int = 10_000
    # Whoever may PUBLISH on Tyk's Redis picks the size: 10 000 notices of 4 MiB held 40 GB. Four times
    # the firehose's default message limit, so any notice a worker could take fits.
    max_held_notice_bytes: int = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class PublishedBatch:
    """Published at `published_ns`; its elements are the first `count` of each processing list."""

    published_ns: int
    parked: list[tuple[str, int]]


class TykRedisBridge:
    def __init__(
        self,
        store: AnalyticsListStore,
        publisher: BridgePublisher,
        converter: FirehoseConverter,
        *,
        config: DrainConfig | None = None,
        notifications: NotificationListener | None = None,
        lease: NotificationLease | None = None,
        faults: FaultInjector | None = None,
        clock: Callable[[], int] = time.time_ns,
        node_secret: str = "",
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.converter = converter
        self.config = config or DrainConfig()
        self.notifications = notifications
        # with several bridges on one Redis, only the lease holder publishes notifications
        self.lease = lease
        self._listening_since: float | None = None
        self.faults = faults or FaultInjector()
        self.clock = clock
        # Tyk's node secret: keeps KeySpaceUpdateNotification notices verifiable once their keys are digested
        self.node_secret = node_secret
        self.stats = BridgeStats()
        self._waiting_logged = False
        # whoever may PUBLISH on Tyk's Redis sends bad notices at their own rate: not a line each
        self._log_throttle = LogThrottle()
        self._held: collections.deque[Notice] = collections.deque()
        self._held_bytes = 0
        self._unreleased: collections.deque[PublishedBatch] = collections.deque()
        self._recover = True  # the first move of a run (and after a Redis error) takes what is parked

    def run(self, stop: threading.Event) -> BridgeStats:
        """Drain until `stop` is set; Redis errors are logged and retried with backoff."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self.step(stop)
            except redis.RedisError as exc:
                self.stats.redis_errors += 1
                # A reply lost with the connection leaves our view of the processing lists unsure:
                # start over from what Redis holds, like a restart (republishing what is parked).
                self._recover = True
                self._unreleased.clear()
                # redis-py's messages may quote the connection URL, password included
                log.warning("redis error=%s; retrying in %.1fs", redact(exc), backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            else:
                backoff = 0.5
        self.finish()
        return self.stats

    def finish(self) -> None:
        """On a clean stop: hand the notifications on, let ZeroMQ write what was published, then
        release it from Redis."""
        if self.lease is not None:
            self.lease.give_up()
        if not self._unreleased:
            return
        wait_ns = self._unreleased[-1].published_ns + self.config.release_delay_ms * 1_000_000 - self.clock()
        time.sleep(max(0, wait_ns) / 1e9)
        try:
            self.release_due(self.clock())
        except redis.RedisError as exc:
            log.warning("redis error=%s at shutdown: the next run republishes what is parked", redact(exc))

    def step(self, stop: threading.Event) -> int:
        """One cycle: heartbeat, drain one batch when someone listens, then notices. Returns records moved."""
        self.publisher.maybe_heartbeat()
        moved = 0
        if self.publisher.has_subscriber(TOPIC_ANALYTICS):
            if self._waiting_logged:
                log.info("firehose subscriber present: draining")
                self._waiting_logged = False
            moved = self.drain_once(stop)
        elif not self._waiting_logged:
            log.warning("no firehose subscriber for %s: leaving records in Redis", TOPIC_ANALYTICS)
            self._waiting_logged = True
        self.release_due(self.clock())
        busy = moved >= self.config.batch
        self.forward_notifications(0 if busy else self._idle_wait_s(), stop)
        return moved

    def _idle_wait_s(self) -> float:
        wait = self.config.poll_interval_s
        if self._unreleased:
            due_ns = self._unreleased[0].published_ns + self.config.release_delay_ms * 1_000_000
            wait = min(wait, max(0.0, (due_ns - self.clock()) / 1e9))
        return wait

    def release_due(self, now_ns: int) -> None:
        """Release, oldest first, the batches published at least release_delay_ms ago."""
        horizon = now_ns - self.config.release_delay_ms * 1_000_000
        due: list[tuple[str, int]] = []
        while self._unreleased and self._unreleased[0].published_ns <= horizon:
            due.extend(self._unreleased.popleft().parked)
        if due:
            self.store.release(due)
            self.faults.reach(AFTER_RELEASE)

    def drain_once(self, stop: threading.Event) -> int:
        """Move and publish one batch (released later); returns the number of new records moved."""
        held = self.store.move(self.config.batch, recover=self._recover)
        self._recover = False
        self._count_skipped(self.store.skipped)
        if not held:
            return 0
        self.faults.reach(AFTER_MOVE)
        moved = sum(b.moved for b in held)
        recovered = sum(b.recovered for b in held)
        self.stats.moved += moved
        if recovered:
            self.stats.recovered += recovered
            log.warning(
                "republishing records=%d left in processing lists by an earlier run (they may have been "
                "published before it stopped)",
                recovered,
            )
        if not self._publish(held, stop):
            log.info("stopped while waiting for subscribers: batch stays in its processing lists")
            return moved
        parked = [(b.source.processing, len(b.elements)) for b in held]
        self._unreleased.append(PublishedBatch(self.clock(), parked))
        self.faults.reach(AFTER_PUBLISH)
        return moved

    def _count_skipped(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.stats.skipped_lists += 1
            # one per list and poll while the key stays: the throttle keeps the log readable
            held = self._log_throttle.allow(("skipped_list", key))
            if held is not None:
                log.warning(
                    "skipped list key=%s reason=wrong_type count=%d (not logged since the last: %d)",
                    key,
                    self.stats.skipped_lists,
                    held,
                )

    def _publish(self, held: Sequence[HeldBatch], stop: threading.Event) -> bool:
        records = self._convert(held)
        size = self.config.message_records
        for start in range(0, len(records), size):
            sent = self.publisher.publish(TOPIC_ANALYTICS, records[start : start + size], stop)
            self.stats.published += sent.records
            self.stats.too_large += sent.too_large
            if sent.stopped:
                return False
        return True

    def _convert(self, held: Sequence[HeldBatch]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for batch in held:
            decode = _DECODERS[batch.source.encoding]
            for element in batch.elements:
                try:
                    records.append(self.converter.convert(decode(element)))
                except TykDecodeError as exc:
                    self._undecodable(batch.source.key, exc)
        return records

    def _undecodable(self, key: str, exc: TykDecodeError) -> None:
        self.stats.undecodable += 1
        if self.stats.undecodable == 1 or self.stats.undecodable % 10_000 == 0:
            log.warning("undecodable element key=%s count=%d error=%s", key, self.stats.undecodable, exc)

    def forward_notifications(self, timeout_s: float, stop: threading.Event) -> None:
        if self.notifications is None:
            stop.wait(timeout_s)
            return
        lease = self.lease
        if lease is not None and self._listening_since is None:
            lease.held()  # take the lease, if free, before the first notifications are read
            self._listening_since = lease.clock()
        received = self.notifications.poll(timeout_s, POLL_LIMIT)
        if lease is not None and self._listening_since is not None:
            polled_at, polled = lease.clock(), len(received)
            if not received:
                lease.held()  # renewed on its schedule (or looked for, free)
            elif not lease.held_since(self._listening_since):  # asks Redis, now
                self.stats.set_aside_notices += polled
                received = []
            if polled < POLL_LIMIT:
                # Drained: the next batch arrives from here on. A full batch may have left older
                # notifications queued behind it: they belong to the same window as it.
                self._listening_since = polled_at
        for data in received:
            # the analytics' digester: a key gets the same digest in a notice as in its records
            notice = notice_from_wire(data, self.clock(), self.converter.digester, self.node_secret)
            if isinstance(notice, Notice):
                self._hold(notice)
            else:
                self.stats.bad_notices += 1
                held = self._log_throttle.allow("bad_notice")
                if held is not None:
                    log.warning(
                        "dropped notification count=%d reason=%s (not logged since the last: %d)",
                        self.stats.bad_notices,
                        notice,
                        held,
                    )
        if self._held and self.publisher.has_subscriber(NOTICE_PREFIX):
            self._publish_notices(stop)

    def _hold(self, notice: Notice) -> None:
        size = _notice_bytes(notice)
        if size > self.config.max_held_notice_bytes:
            self._drop_notice()
            return
        while self._held and (
            len(self._held) >= self.config.max_held_notices
            or self._held_bytes + size > self.config.max_held_notice_bytes
        ):
            self._held_bytes -= _notice_bytes(self._held.popleft())
            self._drop_notice()
        self._held.append(notice)
        self._held_bytes += size

    def _drop_notice(self) -> None:
        self.stats.dropped_notices += 1
        if self.stats.dropped_notices == 1 or self.stats.dropped_notices % 1000 == 0:
            log.warning("no notice subscriber: dropped held notices=%d", self.stats.dropped_notices)

    def _publish_notices(self, stop: threading.Event) -> None:
        by_topic: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self._held_bytes = 0
        while self._held:
            notice = self._held.popleft()
            by_topic[notice.topic].append(notice.record)
        for topic, records in by_topic.items():
            sent = self.publisher.publish(topic, records, stop)
            self.stats.notices += sent.records
            self.stats.too_large += sent.too_large


def _notice_bytes(notice: Notice) -> int:
    """What a held notice costs, roughly: its text fields (the payload is the one that can be large)."""
    record = notice.record
    return len(record["command"]) + len(record["payload"]) + len(record["signature"])
