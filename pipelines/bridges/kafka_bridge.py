"""The Kafka bridge: firehose (ZeroMQ SUB) -> one Kafka topic, keyed by node.

A receiver thread reads the firehose; the asyncio side produces the messages
of each received chunk as records, several messages of one node bundled in
one record (pipelines.firehose.kafka_record), with aiokafka's
idempotent producer (acks=all, so a broker retry never duplicates a record
and records of one partition keep their order), then waits for the acks of
each received chunk before taking the next one. The producer batches per
partition (linger, batch size) on its own.

Delivery: ZeroMQ is at-most-once, Kafka is durable. A message the bridge
never received (HWM drop, the bridge down or restarting) or could not
produce (too large, broker unreachable past the request timeout) is missing
from Kafka; its successor in the same (node, boot) sequence makes it a
counted gap (`lost_messages`) in the workers, because records are keyed by
node and stay in order in their partition. The bridge counts the gaps it
sees itself (SequenceTracker, as the local worker does) for its own logs.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import queue
import threading
import time
from typing import Any

import zmq
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipelines.firehose.kafka_record import read_envelope, to_records
from pipelines.firehose.sequence import GapLog, SequenceTracker, Verdict
from pipelines.firehose.subscriber import FirehoseSubscriber
from pipelines.security.curve import CurveSession
from pipelines.settings import FirehoseSettings, KafkaBridgeSettings, KafkaSettings, WorkerSettings
from sinks.redact import redact

log = logging.getLogger(__name__)

_POLL_MS = 50
_PROGRESS_EVERY_S = 10.0
Chunk = list[tuple[list[bytes], int]]


@dataclasses.dataclass(slots=True)
class BridgeSummary:
    received: int = 0
    produced: int = 0  # messages in Kafka
    records: int = 0  # Kafka records they took (bundles)
    lost: int = 0
    duplicates: int = 0
    failed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


class KafkaBridge:
    def __init__(
        self,
        firehose: FirehoseSettings,
        kafka: KafkaSettings,
        bridge: KafkaBridgeSettings,
        worker: WorkerSettings | None = None,
        *,
        context: zmq.Context[Any] | None = None,
        curve: CurveSession | None = None,
    ) -> None:
        self.firehose = firehose
        self.curve = curve
        self.kafka = kafka
        self.bridge = bridge
        self.drain_timeout_s = (worker or WorkerSettings()).drain_timeout_s
        self.context = context or zmq.Context.instance()
        self.sequences = SequenceTracker()
        self._gaps = GapLog(log)
        self.summary = BridgeSummary()
        self._chunks: queue.Queue[Chunk] = queue.Queue(maxsize=bridge.bridge_queue_chunks)
        self._quiet_since = time.monotonic()
        self.ready = threading.Event()

    def readings(self) -> dict[str, float | dict[str, float]]:
        """The running counters, for the metrics endpoint (read from another thread)."""
        summary = self.summary
        return {
            "received": summary.received,
            "produced": summary.produced,
            "records": summary.records,
            "lost": summary.lost,
            "duplicates": summary.duplicates,
            "failed": {reason: float(count) for reason, count in dict(summary.failed).items()},
            "queue_depth": self._chunks.qsize(),
            "queue_capacity": self.bridge.bridge_queue_chunks,
        }

    def run(self, stop: threading.Event) -> BridgeSummary:
        """Bridge until `stop` is set, then drain the firehose until quiet and flush the producer."""
        return asyncio.run(self._run(stop))

    async def _run(self, stop: threading.Event) -> BridgeSummary:
        producer = self._producer()
        await producer.start()
        subscriber = FirehoseSubscriber.from_settings(self.context, self.firehose, self.curve)
        stop_receiving = threading.Event()
        receiver = threading.Thread(
            target=self._receive,
            args=(subscriber, stop_receiving),
            name="tykpulse-bridge-receiver",
            daemon=True,
        )
        receiver.start()
        log.info(
            "bridge subscribed endpoints=%s kafka=%s topic=%s",
            subscriber.addresses,
            redact(self.kafka.kafka_bootstrap),
            self.kafka.kafka_topic,
        )
        self.ready.set()
        try:
            await self._forward(producer, stop, stop_receiving)
            receiver.join()
            await self._forward_remaining(producer)
        finally:
            stop_receiving.set()
            receiver.join(timeout=5)
            subscriber.close()
            await producer.stop()
        return self.summary

    def _producer(self) -> AIOKafkaProducer:
        compression = None if self.bridge.bridge_compression == "none" else self.bridge.bridge_compression
        return AIOKafkaProducer(
            bootstrap_servers=self.kafka.kafka_bootstrap,
            client_id="tykpulse-bridge",
            enable_idempotence=True,
            acks="all",
            linger_ms=self.bridge.bridge_linger_ms,
            max_batch_size=self.bridge.bridge_batch_bytes,
            max_request_size=self.bridge.bridge_max_request_bytes,
            compression_type=compression,
        )

    def _receive(self, subscriber: FirehoseSubscriber, stop: threading.Event) -> None:
        while not stop.is_set():
            chunk: Chunk = [(frames, time.time_ns()) for frames in subscriber.receive(_POLL_MS)]
            if not chunk:
                continue
            self._quiet_since = time.monotonic()
            while not stop.is_set():
                try:
                    self._chunks.put(chunk, timeout=0.1)
                    break
                except queue.Full:
                    continue  # Kafka is slow: ZeroMQ's HWM takes over, and drops become counted gaps

    async def _forward(
        self, producer: AIOKafkaProducer, stop: threading.Event, stop_receiving: threading.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        next_progress = time.monotonic() + _PROGRESS_EVERY_S
        draining_since: float | None = None
        while True:
            if stop.is_set() and draining_since is None:
                draining_since = time.monotonic()
            if draining_since is not None and self._drained(draining_since):
                stop_receiving.set()
                return
            chunk = await loop.run_in_executor(None, self._next_chunk)
            if chunk:
                await self._produce(producer, chunk)
            if time.monotonic() >= next_progress:
                self._log_progress()
                next_progress += _PROGRESS_EVERY_S

    def _drained(self, draining_since: float) -> bool:
        now = time.monotonic()
        quiet = now - self._quiet_since >= self.drain_timeout_s and self._chunks.empty()
        return quiet or now - draining_since > max(10 * self.drain_timeout_s, 5.0)

    def _next_chunk(self) -> Chunk | None:
        try:
            return self._chunks.get(timeout=0.1)
        except queue.Empty:
            return None

    async def _forward_remaining(self, producer: AIOKafkaProducer) -> None:
        while (chunk := self._next_chunk()) is not None:
            await self._produce(producer, chunk)

    async def _produce(self, producer: AIOKafkaProducer, chunk: Chunk) -> None:
        """Send a chunk and wait for every ack, so nothing is held unacknowledged across chunks."""
        topic = self.kafka.kafka_topic
        messages = []
        for frames, _ in chunk:
            envelope = read_envelope(frames[1]) if len(frames) == 3 else None
            if envelope is not None:
                self._observe(envelope.node, envelope.boot, envelope.seq)
            messages.append((frames, envelope))
        sends, counts = [], []
        bundles = to_records(messages, self.bridge.bridge_bundle_messages, self.bridge.bundle_max_bytes)
        for record, carried in bundles:
            try:
                sends.append(
                    await producer.send(
                        topic,
                        record.value,
                        key=record.key,
                        headers=record.headers,
                        timestamp_ms=chunk[carried[-1]][1] // 1_000_000,
                    )
                )
                counts.append(len(carried))
            except KafkaError as exc:
                self._failed(exc, len(carried))
        self.summary.received += len(chunk)
        for outcome, count in zip(await asyncio.gather(*sends, return_exceptions=True), counts, strict=True):
            if isinstance(outcome, BaseException):
                self._failed(outcome, count)
            else:
                self.summary.produced += count
                self.summary.records += 1

    def _observe(self, node: str, boot: int, seq: int) -> None:
        observation = self.sequences.observe(node, boot, seq)
        if observation.verdict is Verdict.DUPLICATE:
            self.summary.duplicates += 1
        else:
            self.summary.lost += observation.lost
            self._gaps.report(observation, node, boot, seq, self.summary.lost)

    def _failed(self, exc: BaseException, messages: int) -> None:
        reason = type(exc).__name__
        first = self.summary.failed[reason] == 0
        self.summary.failed[reason] += messages
        if first:
            log.error("produce failed reason=%s error=%s (further failures are counted)", reason, redact(exc))

    def _log_progress(self) -> None:
        s = self.summary
        log.info(
            "bridge received=%d produced=%d lost=%d failed=%d",
            s.received,
            s.produced,
            s.lost,
            sum(s.failed.values()),
        )
