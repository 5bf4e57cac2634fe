"""Every setting of the stream side, typed, in one place.

Each class covers one boundary. Values come from (highest first) CLI flags,
environment variables `TYKPULSE_<FIELD>` and the defaults below; the CLI
derives its options from these classes (pipelines.cli.options), so `--help`
and the environment always agree with the code.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
from sinks.options import NameList, split_names

PROXY_FRONTEND = "tcp://127.0.0.1:5555"
PROXY_BACKEND = "tcp://127.0.0.1:5556"

EndpointList = NameList


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
    max_past_s: int = Field(
        default=7 * 86_400, gt=0, description="Records stamped further in the past are rejected."
    )

    _split = field_validator("firehose", "topics", mode="before")(split_names)


class WorkerSettings(_Settings):
    """How a worker windows, aggregates and flushes."""

    window_seconds: int = Field(default=60, description="Tumbling event-time window width; divides 3600.")
    flush_interval_s: float = Field(default=1.0, gt=0, description="Seconds between flushes to ClickHouse.")
    drain_timeout_s: float = Field(
        default=2.0, ge=0, description="On shutdown, keep receiving until the firehose is quiet this long."
    )
    key_hash_salt: SecretStr = Field(
        default=SecretStr(""),
        description="Salt of the API-key hash; identical on every worker. Not set: the key file's.",
    )
    key_hash_salt_file: str | None = Field(
        default=None,
        description="Key file used when no salt is set, created (0600) at first start; default "
        "key-digest.secret beside the WAL directory (data/ without one).",
    )
    max_pending_flushes: int = Field(
        default=600,
        gt=0,
        description="With --no-wal: flushes kept in memory while ClickHouse fails; when full, no new "
        "flush is taken and the receiver is held back (nothing received is dropped).",
    )
    max_pending_records: int = Field(
        default=2_000_000,
        gt=0,
        description="Records buffered between flushes; when full the receiver stops reading and "
        "ZeroMQ drops at its high-water mark (seen as sequence gaps). With the write-ahead log, not "
        "while ClickHouse writes fail: the log takes what arrives then.",
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

    _split = field_validator("connect", "bind", mode="before")(split_names)

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
    max_message_bytes: int = Field(
        default=MAX_MESSAGE_BYTES, gt=0, description="Largest frame accepted; a larger one drops its sender."
    )

    _split = field_validator("frontend", "backend", mode="before")(split_names)


class WalSettings(_Settings):
    """The worker's write-ahead log: what makes crashes and ClickHouse outages lose nothing."""

    wal: bool = Field(
        default=True, description="Log every received message to disk before aggregating it (--no-wal: off)."
    )
    wal_dir: str | None = Field(
        default=None,
        description="Directory of the log; default <path>.wal next to an embedded ClickHouse, else data/wal.",
    )
    wal_fsync: Literal["always", "interval", "never"] = Field(
        default="interval",
        description="When received messages are fsynced: always (each receive batch), interval, or never "
        "(the OS decides); see docs/guarantees.md.",
    )
    wal_fsync_interval_ms: int = Field(default=200, gt=0, description="Most time between fsyncs (interval).")
    wal_segment_bytes: int = Field(default=64 << 20, ge=1 << 16, description="Size of one log segment file.")
    wal_max_bytes: int = Field(
        default=2 << 30, description="Disk bound of the log; when full, new messages are dropped and counted."
    )
    wal_warn_fraction: float = Field(
        default=0.8, gt=0, le=1, description="Warn (log, metric hook) when the log is this full."
    )
    wal_flush_max_bytes: int = Field(
        # Every range is a separate set of inserts: ranges much smaller than a second of a
        # busy firehose make per-insert overhead the bottleneck (bench: +15 % at 128 MiB).
        default=128 << 20,
        gt=0,
        description="Most message bytes in one flush (bounds memory in a backlog).",
    )
    sink_retry_initial_s: float = Field(default=0.5, gt=0, description="First wait after a failed flush.")
    sink_retry_max_s: float = Field(default=30.0, gt=0, description="Longest wait between flush retries.")
    sink_refusals_before_dead_letter: int = Field(
        default=3, ge=1, description="Refusals of an insert before it goes to the dead-letter file."
    )
    shutdown_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="On shutdown, keep writing what the log holds this long; the rest waits for next start.",
    )

    @model_validator(mode="after")
    def _segments_fit(self) -> WalSettings:
        if self.wal_max_bytes < 4 * self.wal_segment_bytes:
            msg = "wal_max_bytes must be at least 4 x wal_segment_bytes"
            raise ValueError(msg)
        return self


class ArchiveSettings(_Settings):
    """The optional raw-event archive (ClickHouse table events_raw) used by replay and rebuild."""

    archive: bool = Field(
        default=False,
        description="Also keep every accepted message, API keys hashed, in table events_raw (--archive).",
    )
    archive_ttl_days: int = Field(default=30, gt=0, description="Days the archive keeps a message.")


class ReplaySettings(_Settings):
    """tykpulse replay: where archived messages are re-published, and how fast."""

    publish: EndpointList = Field(
        default=[PROXY_FRONTEND],
        description="Endpoint to publish the replay on (repeatable); @ binds, else connects.",
    )
    node_prefix: str = Field(
        default="replay-", description="Replayed messages of node N are sent as node <prefix>N, new boot."
    )
    message_rate: float = Field(
        default=1_000, ge=0, description="Replayed messages per second (0: as fast as possible)."
    )
    wait_subscribers_s: float = Field(
        default=10.0, ge=0, description="Wait this long for a subscriber before sending (0: don't wait)."
    )

    _split = field_validator("publish", mode="before")(split_names)


class SimulatorSettings(_Settings):
    """The simulated fleet: what it sends and how fast."""

    record_rate: float = Field(default=5_000, gt=0, description="Analytics records per second, whole fleet.")
    duration_s: float = Field(default=30, ge=0, description="Seconds to run; 0 runs until interrupted.")
    message_records: int = Field(
        default=100, ge=1, le=MAX_RECORDS_PER_MESSAGE, description="Analytics records per firehose message."
    )
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
    time_scale: float = Field(
        default=1.0,
        ge=1,
        description="Event-time seconds per wall second; above 1 the run replays the last "
        "duration x scale seconds, ending now (needs --duration).",
    )
    storm_api_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of all requests sent to one API and rate-limited in a storm.",
    )
    storm_at_s: float = Field(
        default=0.0, ge=0, description="Wall seconds after start when the storm begins."
    )
    storm_for_s: float = Field(default=0.0, ge=0, description="Wall seconds the storm lasts (0: no storm).")
    token_burst_at_s: float = Field(
        default=0.0, ge=0, description="Wall seconds after start of one large token wave (0: none)."
    )
    token_burst_size: int = Field(default=400, ge=1, description="Tokens created in the large wave.")
    incident_at_s: float = Field(
        default=0.0,
        ge=0,
        description="Wall seconds after start of a bad change: ApiUpdated, then more 5xx (0: none).",
    )
    incident_for_s: float = Field(default=0.0, ge=0, description="Wall seconds the raised 5xx rate lasts.")
    incident_5xx_share: float = Field(
        default=0.25, ge=0, le=1, description="Share of requests answered 5xx during the incident."
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


class ObservabilitySettings(_Settings):
    """The HTTP endpoint of every long-running command: Prometheus /metrics, /healthz, /status."""

    metrics: bool = Field(
        default=True, description="Serve /metrics, /healthz and /status (--no-metrics: off)."
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65_535,
        description="Port of the metrics endpoint; 0 takes a free one (`tykpulse status` finds it).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics endpoint binds.")
    runtime_dir: str | None = Field(
        default=None,
        description="Where running commands announce their endpoint for `tykpulse status`; default "
        "$XDG_RUNTIME_DIR/tykpulse, else <tmp>/tykpulse-<uid>.",
    )
    healthy_flush_age_s: float = Field(
        default=30.0, gt=0, description="/healthz fails when flushes have been unwritten this long."
    )


class NoticeSettings(_Settings):
    """Verification of signed cluster notices (Tyk's schemes, docs/protocol.md)."""

    node_secret: SecretStr = Field(
        default=SecretStr(""), description="Tyk node_secret: verify algorithm-5 notice signatures."
    )
    notice_public_key: str | None = Field(
        default=None, description="PEM file of the dashboard's public key: verify RSA-signed notices."
    )


class CurveSettings(_Settings):
    """CurveZMQ on every socket this process opens (certificates as zmq.auth writes them)."""

    curve_secret_key: str | None = Field(
        default=None, description="Own certificate, NAME.key_secret (enables CURVE)."
    )
    curve_server_key: str | None = Field(
        default=None, description="Public certificate (NAME.key) of the peer this process connects to."
    )
    curve_allow: str | None = Field(
        default=None,
        description="Directory of client public keys (*.key) admitted when binding; re-read on SIGHUP.",
    )

    @property
    def enabled(self) -> bool:
        return self.curve_secret_key is not None


class TykBridgeSettings(_Settings):
    """`tykpulse bridge tyk`: Tyk's Redis (analytics lists, cluster notifications) -> firehose."""

    redis: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="Tyk's Redis: redis://[user:password@]host:port/db (rediss:// for TLS).",
    )
    key_prefix: str = Field(default="analytics-", description="Prefix of the gateway's analytics keys.")
    drain_batch: int = Field(
        default=2000, ge=1, le=100_000, description="Most records moved out of Redis per cycle."
    )
    message_records: int = Field(
        default=500, ge=1, le=MAX_RECORDS_PER_MESSAGE, description="Most records per firehose message."
    )
    poll_interval_s: float = Field(
        default=0.2,
        gt=0,
        description="Wait between drains when the lists are empty (keep well under Tyk's 60 s TTL).",
    )
    release_delay_ms: int = Field(
        default=250,
        ge=0,
        description="Keep published records in the processing lists this long, so a crash cannot lose what "
        "ZeroMQ had not yet written (more means more duplicates after a crash).",
    )
    notifications: bool = Field(default=True, description="Republish tyk.cluster.notifications as notices.")
    channel: str = Field(default="tyk.cluster.notifications", description="Tyk's notification channel.")
    bridge_id: str = Field(
        default="", description="Names this bridge's processing lists; give each bridge on one Redis its own."
    )
    pump_copy_prefix: str = Field(
        default="",
        description="Also copy every record to <prefix>tyk-system-analytics... for a Tyk Pump reading that "
        "prefix (redis_key_prefix), so both get everything.",
    )
    pump_copy_ttl_s: int = Field(default=60, ge=0, description="TTL set on the Pump copy lists (0: none).")
    key_hash_salt: SecretStr = Field(
        default=SecretStr(""),
        description="Salt of the key digest published instead of raw keys. Not set: the key file's.",
    )
    key_hash_salt_file: str = Field(
        default="data/key-digest.secret",
        description="Key file used when no salt is set, created (0600) at first start.",
    )
    fault_injection: str = Field(default="", description="Testing only: <point>:<n> SIGKILLs the bridge.")


class TykWebhookSettings(_Settings):
    """`tykpulse bridge tyk-webhook`: Tyk's event-handler webhooks -> firehose events."""

    listen: str = Field(default="127.0.0.1:8089", description="HOST:PORT the HTTP receiver listens on.")
    path: str = Field(default="/tyk/events", description="URL path Tyk's webhooks post to.")
    secret: SecretStr = Field(
        default=SecretStr(""),
        description="Require this value in the secret header; needed unless --listen is a loopback address.",
    )
    secret_header: str = Field(default="X-Tykpulse-Secret", description="Header carrying the shared secret.")
    key_hash_salt: SecretStr = Field(
        default=SecretStr(""),
        description="Salt of the key digest published instead of raw keys. Not set: the key file's.",
    )
    key_hash_salt_file: str = Field(
        default="data/key-digest.secret",
        description="Key file used when no salt is set, created (0600) at first start.",
    )
    max_body_bytes: int = Field(default=1_048_576, gt=0, description="Largest webhook body accepted.")
    flush_ms: int = Field(default=20, ge=0, description="Events are batched per name for at most this long.")
    message_records: int = Field(
        default=500, ge=1, le=MAX_RECORDS_PER_MESSAGE, description="Most events per firehose message."
    )
