"""The Faust runner: Kafka (the bridge's topic) -> the shared core -> ClickHouse.

    tykpulse worker --kafka HOST:9092 --clickhouse http://writer:secret@db:8123
    faust -A pipelines.runners.faust_app worker      # the same app, settings from TYKPULSE_* variables

Workers form one consumer group over the topic's partitions. One agent
takes records in chunks (`stream.take_events`, up to --take-max records or
--flush-interval-s seconds) and hands each chunk to a worker thread that runs
the same Ingestor / rollups / sink as the local runner, one PartitionProcessor
per assigned partition, so the event loop keeps heartbeating while ClickHouse
works. Three stages overlap: Faust collects chunk N+2 while the rollups thread
decodes and aggregates chunk N+1 and the write thread (every ClickHouse call,
in order) writes chunk N's flushes. Each stage waits for the one after it
before taking more, and a revocation waits for all of them.

Exactly-once at the sink, without Faust's exactly_once (Kafka transactions):
ClickHouse holds each partition's position (sinks.clickhouse.positions); on
every assignment a worker claims each partition there, redoes the last
recorded range with the same deduplication tokens, and resumes after it,
seeking back if Kafka's committed offset is ahead. Kafka's commits are only
a hint: Faust acknowledges a chunk when the agent takes the next one, so a
commit can run one chunk ahead of ClickHouse, which costs a re-read, never a
record. No Faust tables: all state a successor needs is in ClickHouse already.

The assigned partitions, their next offsets and what was written are in the
state of the metrics endpoint's /status (pipelines.observe.faust_sensor), the
capped server every long-running command has. Faust's own web server stays
off: it has no bound on connections, and idle ones took every descriptor the
worker had.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import TP

from pipelines.errors import ConfigurationError
from pipelines.ingest import Ingestor, NoticeCheck, build_ingestor
from pipelines.keys import worker_with_key
from pipelines.observe.faust_sensor import observe_worker
from pipelines.observe.serving import serving
from pipelines.runners.kafka_partition import Added, PartitionFlush, PartitionProcessor
from pipelines.runners.kafka_probe import OffsetProbe
from pipelines.runners.kafka_writer import KAFKA_DEAD_LETTER_FILE, FlushWriter
from pipelines.security.notices import notice_check
from pipelines.settings import (
    FaustWorkerSettings,
    FirehoseSettings,
    KafkaSettings,
    NoticeSettings,
    ObservabilitySettings,
    WorkerSettings,
)
from pipelines.wal.build import key_directory
from sinks.clickhouse.positions import PositionStore
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkRejectedError, SinkUnavailableError
from sinks.owned_directory import owned_directory

log = logging.getLogger(__name__)

Record = tuple[TP, int, int, bytes | None, Sequence[tuple[str, bytes]]]
_CLAIM_RETRY_S = 1.0
_STALL_S = 3.0
_CLAIM_REFUSALS = 5


async def seek(consumer: Any, offsets: dict[TP, int]) -> None:
    """Seek partitions on the consumer's own thread.

    Faust's `consumer.seek` runs aiokafka's seek on the caller's (the event
    loop's) thread while the fetcher thread reads the same fetch buffers; under
    load that race crashed the fetcher (KeyError in fetched_records) and left a
    worker that consumed nothing. `seek_wait` runs it on the fetcher's thread.
    """
    await consumer.seek_wait(offsets)


class KafkaRollupRunner:
    """The state of one worker process: its partitions, the sink and the thread that writes."""

    def __init__(
        self,
        kafka: KafkaSettings,
        faust_settings: FaustWorkerSettings,
        worker: WorkerSettings,
        clickhouse: ClickHouseSettings,
        firehose: FirehoseSettings,
        notice_check: NoticeCheck | None = None,
    ) -> None:
        self.kafka = kafka
        self.notice_check = notice_check
        self.settings = faust_settings
        self.worker = worker
        self.firehose = firehose
        self.owner = f"{socket.gethostname()}-{os.getpid()}"
        self.sink = ClickHouseSink(clickhouse)
        self.store = PositionStore(
            lambda: self.sink.client,
            clickhouse.clickhouse_database,
            cluster=bool(clickhouse.clickhouse_cluster),
        )
        dead_letters = key_directory(clickhouse) / KAFKA_DEAD_LETTER_FILE
        self.writer = FlushWriter.build(
            self.sink, self.store, dead_letters, faust_settings.worker_retry_max_s
        )
        self.processors: dict[TP, PartitionProcessor] = {}
        self.probe = OffsetProbe(kafka.kafka_bootstrap)
        # One thread decodes and aggregates and owns the processors' state between awaits; another
        # does every ClickHouse call, in order, so a chunk's inserts overlap the next chunk's decoding.
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tykpulse-rollups")
        self.write_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tykpulse-write")
        self._last_write: concurrent.futures.Future[None] | None = None
        self._in_flight: asyncio.Future[dict[TP, int]] | None = None  # the chunk the thread works on
        # Cleared while partitions are being claimed: a chunk waits instead of skipping records
        # of a partition whose processor does not exist yet (and acknowledging them unprocessed).
        self.assignment_ready = asyncio.Event()
        self.assignment_ready.set()

    # -- building blocks ------------------------------------------------------------------

    def make_ingestor(self) -> Ingestor:
        return build_ingestor(self.firehose, self.worker, replay=True, notice_check=self.notice_check)

    async def in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    async def in_writer(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.write_executor, functools.partial(fn, *args))

    # -- rebalance hooks ------------------------------------------------------------------

    async def on_revoked(self, sender: Any, /, *args: Any, signal: Any = None, **_: Any) -> None:
        """Stop feeding the revoked partitions and wait for the chunk in flight.

        When this returns, this worker writes nothing more to those partitions, so the
        next owner's claim comes after its last flush.
        """
        revoked: set[TP] = args[0]
        for tp in revoked:
            processor = self.processors.pop(tp, None)
            if processor is not None:
                processor.revoked = True
        if self._in_flight is not None:
            await asyncio.wait([self._in_flight])
        if self._last_write is not None:
            await asyncio.wait([asyncio.wrap_future(self._last_write)])
        log.info("partitions revoked %s", sorted(tp.partition for tp in revoked))

    async def on_assigned(self, sender: Any, /, *args: Any, signal: Any = None, **_: Any) -> None:
        assigned: set[TP] = args[0]
        mine = sorted(
            (tp for tp in assigned if tp.topic == self.kafka.kafka_topic), key=lambda tp: tp.partition
        )
        fresh = [tp for tp in mine if tp not in self.processors]
        for tp in set(self.processors) - set(mine):
            self.processors.pop(tp).revoked = True
        if not fresh:
            return
        self.assignment_ready.clear()
        try:
            earliest = await sender.consumer.earliest_offsets(*fresh)
            for tp in fresh:
                self.processors[tp] = await self.in_writer(self._claim, tp, earliest.get(tp) or 0)
                await seek(sender.consumer, {tp: self.processors[tp].next_offset})
        finally:
            self.assignment_ready.set()
        log.info("partitions assigned %s", {tp.partition: self.processors[tp].next_offset for tp in fresh})

    async def watchdog(self, app: Any) -> None:
        """Seek a partition that has records past its next offset but gets none delivered.

        Faust seeks to Kafka's committed offsets after an assignment, possibly after this
        worker's own seek; when those are ahead of ClickHouse and nothing new arrives, no
        record would ever reveal it. This timer does.
        """
        stalled = [
            (tp, p) for tp, p in list(self.processors.items()) if p.idle_for() > _STALL_S and not p.revoked
        ]
        if not stalled:
            return
        ends = await app.consumer.highwaters(*(tp for tp, _ in stalled))
        for tp, processor in stalled:
            end = ends.get(tp)
            if end is not None and end > processor.next_offset:
                target = await self._past_holes(tp, processor, processor.next_offset)
                if target >= end:
                    continue  # nothing but markers up to the end: nothing to read yet
                log.warning(
                    "partition=%d idle with offsets %d-%d unread: seeking", tp.partition, target, end - 1
                )
                processor.touch()
                await seek(app.consumer, {tp: target})

    async def _past_holes(self, tp: TP, processor: PartitionProcessor, expected: int) -> int:
        """Where to seek for `expected`: there, or at the next record the log holds after it when
        the offsets from it hold none (a transaction marker), which the processor is told."""
        found = await self.probe.next_offset(tp.topic, tp.partition, expected)
        if found is None or found <= expected:
            return expected
        # in the rollups thread, which owns the processor: a chunk of its records may be in there
        await self.in_thread(processor.skip_to, expected, found)
        return processor.next_offset

    def _claim(self, tp: TP, earliest: int) -> PartitionProcessor:
        """Claim `tp` in ClickHouse (retrying while it is unreachable) and build its processor."""
        refused = 0
        while True:
            try:
                if not self.writer.delivery.ready:
                    self.sink.setup()
                    self.writer.delivery.ready = True
                position = self.store.claim(tp.topic, tp.partition, self.owner, start_offset=earliest)
                break
            except SinkUnavailableError as exc:
                log.warning("cannot claim partition=%d yet: %s", tp.partition, exc)
            except SinkRejectedError as exc:
                # e.g. two workers replacing the same view at once on a server; give up only if it persists
                refused += 1
                if refused > _CLAIM_REFUSALS:
                    raise
                log.warning("claim of partition=%d refused, retrying: %s", tp.partition, exc)
            time.sleep(_CLAIM_RETRY_S)
        if position.first_offset < earliest:
            resume = max(earliest, position.last_offset + 1)
            log.error(
                "partition=%d: offsets %d-%d left Kafka (retention) before they reached ClickHouse; "
                "resuming at %d, their messages count as lost",
                tp.partition,
                position.first_offset,
                earliest - 1,
                resume,
            )
            position = dataclasses.replace(position, first_offset=resume, last_offset=resume - 1)
        return PartitionProcessor(position, self.make_ingestor)

    # -- the agent ------------------------------------------------------------------------

    async def agent(self, stream: Any) -> Any:
        async for events in stream.take_events(self.settings.take_max, within=self.worker.flush_interval_s):
            await self.assignment_ready.wait()
            records: list[Record] = [
                (
                    TP(ev.message.topic, ev.message.partition),
                    ev.message.offset,
                    round(ev.message.timestamp * 1000),
                    ev.message.value,
                    ev.message.headers or (),
                )
                for ev in events
            ]
            await self._settle(stream.app.consumer)
            self._in_flight = asyncio.ensure_future(self.in_thread(self.process, records))
            yield len(records)  # take_events acknowledges the chunk now, before it is written
        await self._settle(stream.app.consumer)

    async def _settle(self, consumer: Any) -> None:
        """Wait for the chunk in flight and seek where it asked to (partitions still held)."""
        if self._in_flight is None:
            return
        in_flight, self._in_flight = self._in_flight, None
        seeks = await in_flight
        held = {
            tp: await self._past_holes(tp, self.processors[tp], offset)
            for tp, offset in seeks.items()
            if tp in self.processors
        }
        if held:
            await seek(consumer, held)

    def process(self, records: list[Record]) -> dict[TP, int]:
        """Ingest a chunk and flush every partition that has something (runs in the rollups thread).

        The flushes are written by the write thread; this returns once the previous
        chunk's writes are done, so at most one chunk's writes are behind.
        """
        previous = self._last_write
        seeks: dict[TP, int] = {}
        for tp, offset, timestamp_ms, value, headers in records:
            processor = self.processors.get(tp)
            if processor is None or processor.revoked:
                continue
            added = processor.add(offset, timestamp_ms, value, list(headers))
            if added is Added.SEEK:
                seeks[tp] = processor.next_offset
            elif processor.at_redo_end or (processor.full and processor.can_flush):
                self._flush(processor)
        for processor in list(self.processors.values()):
            if processor.can_flush and not processor.revoked:
                self._flush(processor)
        if previous is not None:
            previous.result()
        return seeks

    def _flush(self, processor: PartitionProcessor) -> None:
        flush = processor.take_flush()
        self._last_write = self.write_executor.submit(self._write, processor, flush)

    def _write(self, processor: PartitionProcessor, flush: PartitionFlush) -> None:
        if self.writer.write(flush, lambda: not processor.revoked):
            processor.landed_offset = flush.position.last_offset
        else:
            processor.revoked = True  # another worker owns it now; stop feeding it

    def status(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "topic": self.kafka.kafka_topic,
            "partitions": {
                str(tp.partition): {
                    "next_offset": p.next_offset,
                    "landed_offset": p.landed_offset,
                    "claim": p.claimed.claim,
                }
                for tp, p in sorted(self.processors.items(), key=lambda item: item[0].partition)
            },
            "written": self.writer.status(),
        }

    def close(self) -> None:
        """Stop writing: the flush in progress finishes, nothing after it starts."""
        for processor in self.processors.values():
            processor.revoked = True
        self.executor.shutdown(wait=True)
        self.write_executor.shutdown(wait=True)
        self.sink.close()


def create_app(
    kafka: KafkaSettings,
    faust_settings: FaustWorkerSettings,
    worker: WorkerSettings,
    clickhouse: ClickHouseSettings,
    firehose: FirehoseSettings,
    notices: NoticeSettings | None = None,
) -> faust.App:
    """The Faust app; with a node secret or public key, notices are verified (else accepted, logged)."""
    notices = notices or NoticeSettings()
    # the same key file as `run` and `rebuild` on this data, or digests would not merge
    worker = worker_with_key(worker, key_directory(clickhouse))
    check = notice_check(notices.node_secret.get_secret_value(), notices.notice_public_key)
    runner = KafkaRollupRunner(kafka, faust_settings, worker, clickhouse, firehose, check)
    session_ms = int(faust_settings.session_timeout_s * 1000)
    datadir = key_directory(clickhouse) / "faust"
    try:
        # Faust makes the last level only (./data may not exist). Beside it the dead letters are
        # appended to: in a directory others may write, a link planted at their name took the rows
        # into a file of the planter's choosing, as `run` refuses for its log.
        owned_directory(datadir)
    except PermissionError as exc:
        msg = f"worker data directory: {exc}"
        raise ConfigurationError(msg) from None
    app = faust.App(
        faust_settings.kafka_group,
        broker=[f"kafka://{host.strip()}" for host in kafka.kafka_bootstrap.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
        store="memory://",
        # Faust's own files beside the key file, not `<group>-data` in whatever directory the
        # worker was started from (braces doubled: Faust formats the path with its config)
        datadir=str(datadir).replace("{", "{{").replace("}", "}}"),
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=faust_settings.session_timeout_s,
        broker_heartbeat_interval=max(session_ms // 10, 100) / 1000,
        web_enabled=False,
    )
    topic = app.topic(kafka.kafka_topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    app.agent(topic, name="tykpulse-rollups")(runner.agent)
    app.on_partitions_revoked.connect(runner.on_revoked)
    app.on_partitions_assigned.connect(runner.on_assigned)

    async def watchdog() -> None:
        await runner.watchdog(app)

    app.timer(_STALL_S)(watchdog)

    async def shutdown(sender: Any, /, *_: Any, signal: Any = None, **__: Any) -> None:
        runner.close()
        await runner.probe.close()

    app.on_before_shutdown.connect(shutdown)

    app.tykpulse_runner = runner  # type: ignore[attr-defined]  # for tests and the worker command
    return app


def app_from_environment() -> faust.App:
    """The app `faust -A pipelines.runners.faust_app worker` runs: every setting from TYKPULSE_*,
    and the metrics endpoint `tykpulse worker` serves, from the worker's start to its shutdown."""
    observe = ObservabilitySettings()
    app = create_app(
        KafkaSettings(),
        FaustWorkerSettings(),
        WorkerSettings(),
        ClickHouseSettings(),
        FirehoseSettings(),
        NoticeSettings(),
    )
    watch = observe_worker(app, observe.healthy_flush_age_s)
    endpoint = contextlib.ExitStack()

    async def serve_endpoint() -> None:
        endpoint.enter_context(serving(observe, watch, "worker"))

    async def close_endpoint(sender: Any, /, *_: Any, **__: Any) -> None:
        endpoint.close()

    app.task(serve_endpoint)
    app.on_before_shutdown.connect(close_endpoint)
    return app


@functools.cache
def _default_app() -> faust.App:
    return app_from_environment()


def __getattr__(name: str) -> Any:
    # `faust -A` looks for a module attribute `app`; building it only then keeps this module
    # free of environment reads at import.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
