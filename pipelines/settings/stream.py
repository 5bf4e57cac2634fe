"""The firehose side: subscribers, workers, publishers, the proxy, notices, CURVE and metrics."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from pipelines.firehose.endpoints import Endpoint, parse_endpoint
from pipelines.firehose.protocol import (
    DEFAULT_HEARTBEAT_INTERVAL_MS,
    ENCODING_MSGPACK,
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    SUBSCRIBE_ALL,
    node_problem,
)
from pipelines.firehose.publisher import DEFAULT_SNDHWM
from pipelines.firehose.subscriber import DEFAULT_RCVBUF_BYTES, DEFAULT_RCVHWM
from pipelines.settings.base import PROXY_BACKEND, PROXY_FRONTEND, EndpointList, EnvSettings, default_node
from sinks.options import split_names


class FirehoseSettings(EnvSettings):
    """Where a worker subscribes and what it accepts."""

    firehose: EndpointList = Field(
        default=[PROXY_BACKEND],
        description="Endpoint to subscribe to (repeatable); prefix with @ to bind instead of connect.",
    )
    topics: EndpointList = Field(default=[SUBSCRIBE_ALL], description="Topic prefixes to subscribe to.")
    rcvhwm: int = Field(default=DEFAULT_RCVHWM, ge=0, description="Receive high-water mark, in messages.")
    rcvbuf_bytes: int = Field(
        default=DEFAULT_RCVBUF_BYTES,
        ge=0,
        description="Kernel receive buffer of each firehose connection (capped by net.core.rmem_max); "
        "0 leaves it to TCP's autotuning.",
    )
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, gt=0, description="Largest message accepted.")
    max_records: int = Field(default=MAX_RECORDS_PER_MESSAGE, gt=0, description="Most records per message.")
    # at most ~95 years: a receive time plus or minus the limit stays inside int64 nanoseconds
    max_future_s: int = Field(
        default=86_400,
        gt=0,
        le=3_000_000_000,
        description="Records stamped further in the future are rejected.",
    )
    max_past_s: int = Field(
        default=7 * 86_400,
        gt=0,
        le=3_000_000_000,
        description="Records stamped further in the past are rejected.",
    )

    _split = field_validator("firehose", "topics", mode="before")(split_names)


class WorkerSettings(EnvSettings):
    """How a worker windows, aggregates and flushes."""

    window_seconds: int = Field(default=60, description="Tumbling event-time window width; divides 60.")
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
        "while ClickHouse writes fail: the log takes what arrives then. A Kafka worker flushes a "
        "partition once this many wait.",
    )


class PublisherSettings(EnvSettings):
    """A tykpulse publisher (simulator, bridges): where it sends and how."""

    connect: EndpointList = Field(
        default=[],
        description=f"Endpoint to connect and publish to (repeatable); {PROXY_FRONTEND}, the proxy's "
        "frontend, when neither --connect nor --bind is given.",
    )
    bind: EndpointList = Field(default=[], description="Endpoint to bind and publish on (repeatable).")
    node: str = Field(default_factory=default_node, description="Node id in every envelope.")
    encoding: str = Field(default=ENCODING_MSGPACK, description="Payload encoding: msgpack or json.")
    sndhwm: int = Field(default=DEFAULT_SNDHWM, ge=0, description="Send high-water mark, in messages.")
    heartbeat_interval_ms: int = Field(
        default=DEFAULT_HEARTBEAT_INTERVAL_MS, gt=0, description="Heartbeat period promised to consumers."
    )
    max_message_bytes: int = Field(
        default=MAX_MESSAGE_BYTES,
        gt=0,
        description="Largest message sent (the workers' and proxy's --max-message-bytes): records that would "
        "make a larger one are split over several; a record larger alone is counted and not sent.",
    )

    _split = field_validator("connect", "bind", mode="before")(split_names)

    @field_validator("node")
    @classmethod
    def _printable_node(cls, node: str) -> str:
        problem = node_problem(node)  # workers refuse such an envelope: refuse the setting first
        if problem is not None:
            raise ValueError(problem)
        return node

    def endpoints(self) -> list[Endpoint]:
        if not self.connect and not self.bind:
            return [parse_endpoint(PROXY_FRONTEND)]
        return [parse_endpoint(e) for e in self.connect] + [
            parse_endpoint(e, bind_by_default=True) for e in self.bind
        ]


class ProxySettings(EnvSettings):
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


class ObservabilitySettings(EnvSettings):
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


class NoticeSettings(EnvSettings):
    """Verification of signed cluster notices (Tyk's schemes, docs/protocol.md)."""

    node_secret: SecretStr = Field(
        default=SecretStr(""), description="Tyk node_secret: verify algorithm-5 notice signatures."
    )
    notice_public_key: str | None = Field(
        default=None, description="PEM file of the dashboard's public key: verify RSA-signed notices."
    )


class CurveSettings(EnvSettings):
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
