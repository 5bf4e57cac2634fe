"""Every setting of the stream side, typed, in one place.

Each class covers one boundary. Values come from (highest first) CLI flags,
environment variables `TYKPULSE_<FIELD>` and the defaults below; the CLI
derives its options from these classes (pipelines.cli.options), so `--help`
and the environment always agree with the code.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipelines.firehose.endpoints import Endpoint, parse_endpoint
from pipelines.firehose.protocol import (
    DEFAULT_HEARTBEAT_INTERVAL_MS,
    ENCODING_MSGPACK,
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    SUBSCRIBE_ALL,
)
from pipelines.firehose.publisher import DEFAULT_SNDHWM
from pipelines.firehose.subscriber import DEFAULT_RCVHWM

PROXY_FRONTEND = "tcp://127.0.0.1:5555"
PROXY_BACKEND = "tcp://127.0.0.1:5556"

EndpointList = Annotated[list[str], NoDecode]


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


def _default_node() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TYKPULSE_", frozen=True, extra="ignore")


class FirehoseSettings(_Settings):
    """Where a worker subscribes and what it accepts."""

    firehose: EndpointList = Field(
        default=[PROXY_BACKEND],
        description="Endpoint to subscribe to (repeatable); prefix with @ to bind instead of connect.",
    )
    topics: EndpointList = Field(default=[SUBSCRIBE_ALL], description="Topic prefixes to subscribe to.")
    rcvhwm: int = Field(default=DEFAULT_RCVHWM, ge=0, description="Receive high-water mark, in messages.")
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, gt=0, description="Largest message accepted.")
    max_records: int = Field(default=MAX_RECORDS_PER_MESSAGE, gt=0, description="Most records per message.")
    max_future_s: int = Field(
        default=86_400, gt=0, description="Records stamped further in the future are rejected."
    )

    _split = field_validator("firehose", "topics", mode="before")(_split_list)


class WorkerSettings(_Settings):
    """How a worker windows, aggregates and flushes."""

    window_seconds: int = Field(default=60, description="Tumbling event-time window width; divides 3600.")
    flush_interval_s: float = Field(default=1.0, gt=0, description="Seconds between flushes to ClickHouse.")
    drain_timeout_s: float = Field(
        default=2.0, ge=0, description="On shutdown, keep receiving until the firehose is quiet this long."
    )
    key_hash_salt: SecretStr = Field(
        default=SecretStr(""), description="Salt of the API-key hash; identical on every worker."
    )
    max_pending_flushes: int = Field(
        default=600, gt=0, description="Failed flushes kept for retry before the oldest are dropped."
    )


class PublisherSettings(_Settings):
    """A tykpulse publisher (simulator, bridges): where it sends and how."""

    connect: EndpointList = Field(
        default=[],
        description=f"Endpoint to connect and publish to (repeatable); {PROXY_FRONTEND}, the proxy's "
        "frontend, when neither --connect nor --bind is given.",
    )
    bind: EndpointList = Field(default=[], description="Endpoint to bind and publish on (repeatable).")
    node: str = Field(default_factory=_default_node, description="Node id in every envelope.")
    encoding: str = Field(default=ENCODING_MSGPACK, description="Payload encoding: msgpack or json.")
    sndhwm: int = Field(default=DEFAULT_SNDHWM, ge=0, description="Send high-water mark, in messages.")
    heartbeat_interval_ms: int = Field(
        default=DEFAULT_HEARTBEAT_INTERVAL_MS, gt=0, description="Heartbeat period promised to consumers."
    )

    _split = field_validator("connect", "bind", mode="before")(_split_list)

    def endpoints(self) -> list[Endpoint]:
        if not self.connect and not self.bind:
            return [parse_endpoint(PROXY_FRONTEND)]
        return [parse_endpoint(e) for e in self.connect] + [
            parse_endpoint(e, bind_by_default=True) for e in self.bind
        ]


class ProxySettings(_Settings):
    frontend: EndpointList = Field(
        default=["@" + PROXY_FRONTEND], description="Where publishers connect (XSUB); @ binds."
    )
    backend: EndpointList = Field(
        default=["@" + PROXY_BACKEND], description="Where workers connect (XPUB); @ binds."
    )
    hwm: int = Field(default=200_000, ge=0, description="High-water mark of both sides, in messages.")

    _split = field_validator("frontend", "backend", mode="before")(_split_list)


class SimulatorSettings(_Settings):
    """The simulated fleet: what it sends and how fast."""

    rate: float = Field(default=5_000, gt=0, description="Analytics records per second, whole fleet.")
    duration_s: float = Field(default=30, ge=0, description="Seconds to run; 0 runs until interrupted.")
    batch: int = Field(default=100, ge=1, le=MAX_RECORDS_PER_MESSAGE, description="Records per message.")
    gateways: int = Field(default=4, ge=1, description="Simulated gateway nodes.")
    orgs: int = Field(default=20, ge=1, description="Organisations.")
    apis: int = Field(default=200, ge=1, description="APIs.")
    keys: int = Field(default=30_000, ge=1, description="API keys.")
    seed: int = Field(default=1, description="Seed of every random draw; a seed names a run.")
    late_fraction: float = Field(
        default=0.01, ge=0, le=1, description="Share of records stamped 1-4 minutes in the past."
    )
    token_wave_every_s: float = Field(default=5.0, gt=0, description="Seconds between token waves.")
    config_burst_every_s: float = Field(default=10.0, gt=0, description="Seconds between config bursts.")
    node_secret: SecretStr = Field(
        default=SecretStr(""), description="Tyk node_secret used to sign notices (algorithm 5)."
    )
    truth: str | None = Field(default=None, description="Write the exact expected rollups to this JSON file.")
    wait_subscribers_s: float = Field(
        default=10.0, ge=0, description="Wait this long for a subscriber before sending (0: don't wait)."
    )


class KafkaSettings(_Settings):
    """Where the scale-out path's Kafka log is (bridge and workers)."""

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port,..."
    )
    kafka_topic: str = Field(default="tyk.events", description="Topic carrying the firehose messages.")


class KafkaBridgeSettings(_Settings):
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
    bridge_compression: str = Field(default="none", description="Producer compression: none or gzip.")
    bridge_queue_chunks: int = Field(
        default=64, gt=0, description="Received chunks held while Kafka is slow; then ZeroMQ's HWM drops."
    )


class FaustWorkerSettings(_Settings):
    """The Faust worker: consumer group, batching and its web endpoint."""

    kafka_group: str = Field(default="tykpulse", description="Consumer group (the Faust app id).")
    take_max: int = Field(default=5_000, gt=0, description="Most Kafka records processed per chunk.")
    session_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Kafka group session timeout: how fast a dead worker's partitions move.",
    )
    web_port: int = Field(default=6066, ge=0, le=65535, description="Faust web endpoint port.")
    web_bind: str = Field(
        default="127.0.0.1",
        description="Faust web endpoint bind address (0.0.0.0 to be scraped from outside).",
    )
    worker_retry_max_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest pause between retries of a flush while ClickHouse is unreachable.",
    )
