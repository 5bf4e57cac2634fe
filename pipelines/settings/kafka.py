"""The scale-out path: the broker, the Kafka bridge and the Faust workers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipelines.settings.base import EnvSettings


class KafkaSettings(EnvSettings):
    """Where the scale-out path's Kafka log is (bridge and workers)."""

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port,..."
    )
    kafka_topic: str = Field(default="tyk.events", description="Topic carrying the firehose messages.")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _no_credentials(cls, bootstrap: str) -> str:
        # the broker's client logs the bootstrap string as given; tykpulse has no Kafka authentication
        if "@" in bootstrap:
            msg = "kafka_bootstrap takes host:port,... without credentials"
            raise ValueError(msg)
        return bootstrap


class KafkaBridgeSettings(EnvSettings):
    """How the bridge produces to Kafka."""

    bridge_linger_ms: int = Field(
        default=5, ge=0, description="Producer linger: wait this long to fill batches."
    )
    bridge_batch_bytes: int = Field(default=1_048_576, gt=0, description="Producer batch size per partition.")
    bridge_max_request_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="Largest Kafka request; a bigger firehose message is counted as failed (raise the "
        "topic's max.message.bytes with it).",
    )
    bridge_compression: Literal["none", "gzip", "lz4", "zstd"] = Field(
        default="lz4",
        description="Compression of the records the bridge writes. lz4 stores firehose payloads in about "
        "a quarter of the bytes and makes a worker's Kafka reads several times cheaper (docs/scaling.md).",
    )
    bridge_bundle_messages: int = Field(
        default=256,
        gt=0,
        description="Most firehose messages of one node carried by one Kafka record (1: a record per "
        "message). A worker's cost is per record, so bundles make small messages cheap to consume.",
    )
    bridge_bundle_bytes: int = Field(
        default=524_288,
        gt=0,
        description="Most bytes of messages in one bundle (at most half of --bridge-max-request-bytes).",
    )
    bridge_queue_chunks: int = Field(
        default=64, gt=0, description="Received chunks held while Kafka is slow; then ZeroMQ's HWM drops."
    )

    @property
    def bundle_max_bytes(self) -> int:
        """The bundle size used: --bridge-bundle-bytes, capped at half the largest request."""
        return min(self.bridge_bundle_bytes, self.bridge_max_request_bytes // 2)


class FaustWorkerSettings(EnvSettings):
    """The Faust worker: consumer group, batching and retries (its endpoint is ObservabilitySettings')."""

    kafka_group: str = Field(default="tykpulse", description="Consumer group (the Faust app id).")
    take_max: int = Field(default=5_000, gt=0, description="Most Kafka records processed per chunk.")
    session_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Kafka group session timeout: how fast a dead worker's partitions move.",
    )
    worker_retry_max_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest pause between retries of a flush while ClickHouse is unreachable.",
    )
