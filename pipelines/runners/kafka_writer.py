"""Writes one partition's flush: fence check, intent, rollups; retried until it lands.

Order matters for exactly-once: the intent (the flush's offset range) is in
ClickHouse before any of its rollups, so a worker that dies half way leaves a
range its successor redoes with the same tokens. While ClickHouse is
unreachable the same flush is retried (same position, same tokens: nothing
lands twice) with capped backoff, holding back the partition; Kafka keeps the
records meanwhile; that includes every error that does not prove the rows bad
(a cancelled query, limits, a denied user: see sinks.clickhouse.sink.translate).
A flush ClickHouse refuses because of its rows (a parse, type or column error)
is logged and dropped, as the local runner does, since retrying cannot help.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from pipelines.runners.kafka_partition import PartitionFlush
from sinks.clickhouse.positions import PositionStore
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkRejectedError, SinkUnavailableError

log = logging.getLogger(__name__)

_FIRST_RETRY_S = 0.2


@dataclasses.dataclass(slots=True)
class WriterStats:
    flushes: int = 0
    records: int = 0
    messages: int = 0
    rows: int = 0
    retries: int = 0
    dropped: int = 0
    lost_partitions: int = 0


class FlushWriter:
    def __init__(self, sink: ClickHouseSink, store: PositionStore, *, retry_max_s: float = 5.0) -> None:
        self.sink = sink
        self.store = store
        self.retry_max_s = retry_max_s
        self.stats = WriterStats()

    def write(self, flush: PartitionFlush, assigned: Callable[[], bool]) -> bool:
        """True once the flush landed (or was refused for good); False if the partition went elsewhere."""
        delay = _FIRST_RETRY_S
        while assigned():
            try:
                return self._attempt(flush)
            except SinkUnavailableError as exc:
                self.stats.retries += 1
                log.warning(
                    "flush failed, retrying partition=%d range=%d-%d in %.1fs error=%s",
                    flush.position.partition,
                    flush.position.first_offset,
                    flush.position.last_offset,
                    delay,
                    exc,
                )
                time.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
        return False

    def _attempt(self, flush: PartitionFlush) -> bool:
        position = flush.position
        if not self.store.still_owner(position):
            self.stats.lost_partitions += 1
            log.warning("partition=%d claimed by another worker; not writing", position.partition)
            return False
        self.store.record(position)
        try:
            rows = self.sink.write(flush.partials, position.token)
        except SinkRejectedError as exc:
            self.stats.dropped += 1
            log.error("flush refused by ClickHouse, dropped token=%s error=%s", position.token, exc)
            return True
        self.stats.flushes += 1
        self.stats.records += flush.records
        self.stats.messages += flush.messages
        self.stats.rows += rows
        return True
