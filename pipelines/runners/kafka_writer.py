"""Writes one partition's flush: fence check, intent, rollups; retried until it lands.

Order matters for exactly-once: the intent (the flush's offset range) is in
ClickHouse before any of its rollups, so a worker that dies half way leaves a
range its successor redoes with the same tokens. The rollups go through the one
delivery path (pipelines.delivery): rows in key order, so the redo's blocks are
the ones the first attempt sent; while an insert fails for a reason that does
not prove its rows bad (an outage, a cancelled query, limits, a denied user),
the same flush is retried with backoff under the same tokens, holding back the
partition (Kafka keeps the records meanwhile); a missing schema is applied
again; an insert ClickHouse refuses because of its rows goes to the dead-letter
file with the reason after the policy's refusals, and the partition moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from pipelines.delivery import Delivery, DeliveryStats, RetryPolicy, RollupSink
from pipelines.runners.kafka_partition import PartitionFlush
from pipelines.wal.deadletter import DeadLetters
from sinks.clickhouse.positions import PositionStore
from sinks.errors import SinkUnavailableError

log = logging.getLogger(__name__)

# Beside the key file (data/ by default): inserts ClickHouse refused for good, with the reason.
KAFKA_DEAD_LETTER_FILE: Final = "kafka-dead-letter.jsonl"
# Longest sleep between checks that the partition is still assigned, while a retry is not yet due.
_CHECK_S: Final = 0.5


class FlushWriter:
    def __init__(self, delivery: Delivery, store: PositionStore) -> None:
        self.delivery = delivery
        self.store = store
        self.lost_partitions = 0

    @classmethod
    def build(
        cls, sink: RollupSink, store: PositionStore, dead_letters: Path, retry_max_s: float
    ) -> FlushWriter:
        """The Faust worker's writer: the one delivery policy, backoff capped at retry_max_s."""
        delivery = Delivery(
            sink,
            DeadLetters(dead_letters),
            policy=RetryPolicy(max_s=retry_max_s),
            keeper="Kafka keeps the records",
        )
        return cls(delivery, store)

    @property
    def stats(self) -> DeliveryStats:
        return self.delivery.stats

    def status(self) -> dict[str, int]:
        """What was written, for the state in the worker's /status."""
        stats = self.delivery.stats
        return {
            "flushes": stats.flushes,
            "messages": stats.messages_written,
            "records": stats.records_written,
            "rows": stats.rows_written,
            "retries": stats.failed_attempts,
            # inserts refused for good, in the dead-letter file (nothing is dropped)
            "dropped": stats.dead_lettered_inserts,
            "dead_lettered_rows": stats.dead_lettered_rows,
            "lost_partitions": self.lost_partitions,
        }

    def write(self, flush: PartitionFlush, assigned: Callable[[], bool]) -> bool:
        """True once the flush landed (or went to the dead letters); False if the partition went elsewhere."""
        position = flush.position
        shipment = self.delivery.shipment(
            position.token, flush.partials, records=flush.records, messages=flush.messages
        )
        while assigned():
            wait = self.delivery.wait_s()
            if wait > 0:
                time.sleep(min(wait, _CHECK_S))
                continue
            try:
                if not self.store.still_owner(position):
                    self.lost_partitions += 1
                    log.warning("partition=%d claimed by another worker; not writing", position.partition)
                    return False
                self.store.record(position)
            except SinkUnavailableError as exc:
                self.delivery.failed(exc, f"record the range of partition={position.partition}")
                continue
            if self.delivery.attempt(shipment):
                return True
        return False
