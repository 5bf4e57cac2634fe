"""Where a partition's next record really is, read from the log itself.

Kafka offsets are not dense: a transaction's commit or abort marker takes an
offset that no consumer is ever handed (and anyone who may write the topic can
write a transaction). A worker that waits for exactly the offset after its last
one would wait forever behind such a marker, seeking back to it again and
again. It cannot tell a marker from Kafka's committed offset being ahead of
ClickHouse (both look like a record past the expected offset, and Faust seeks to
committed offsets on its own after a rebalance), so it asks a consumer of its own
that no one else seeks: the first record it is handed from an offset is the next
one there is.
"""

from __future__ import annotations

import logging
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

_FETCH_MS: Final = 2_000


class OffsetProbe:
    """One consumer outside the group, started on first use, reading one record at a time."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None

    async def next_offset(self, topic: str, partition: int, offset: int) -> int | None:
        """The offset of the first record a reader starting at `offset` is handed; with none there
        yet, the position past the markers it read; None when the log does not say (yet)."""
        tp = TopicPartition(topic, partition)
        try:
            consumer = await self._started()
            consumer.assign([tp])
            try:
                consumer.seek(tp, offset)
                records = (await consumer.getmany(tp, timeout_ms=_FETCH_MS, max_records=1)).get(tp, [])
                position = int(records[0].offset) if records else int(await consumer.position(tp))
            finally:
                consumer.unsubscribe()  # or it would go on fetching the partition, to no one
        except KafkaError as exc:
            log.warning("cannot read partition=%d at offset=%d: %s", partition, offset, exc)
            return None
        return position if records or position > offset else None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            # read_uncommitted, as Faust's own consumer: both are handed the same records
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id="tykpulse-offset-probe",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_uncommitted",
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
