"""The write-ahead log, the raw archive and replays from it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipelines.firehose.protocol import MAX_MESSAGE_BYTES, node_problem
from pipelines.settings.base import PROXY_FRONTEND, EndpointList, EnvSettings
from sinks.options import split_names


class WalSettings(EnvSettings):
    """The worker's write-ahead log: what makes crashes and ClickHouse outages lose nothing."""

    wal: bool = Field(
        default=True,
        description="Log every received message to disk before aggregating it (--no-wal: off; then a "
        "crash loses what is not flushed yet, and losses while the worker is down go uncounted).",
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


class ArchiveSettings(EnvSettings):
    """The optional raw-event archive (ClickHouse table events_raw) used by replay and rebuild."""

    archive: bool = Field(
        default=False,
        description="Also keep every accepted message, API keys hashed, in table events_raw (--archive).",
    )
    archive_ttl_days: int = Field(default=30, gt=0, description="Days the archive keeps a message.")


class ReplaySettings(EnvSettings):
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
    max_message_bytes: int = Field(
        default=MAX_MESSAGE_BYTES,
        gt=0,
        description="Largest message sent (the receiving workers' --max-message-bytes): an archived "
        "message over it (hashed keys are longer than most keys) is split; a record larger alone is "
        "counted, not sent.",
    )

    max_future_s: int = Field(
        default=86_400,
        gt=0,
        le=3_000_000_000,
        description="The archiving workers' --max-future-s: records they refused as stamped too far "
        "ahead of their receipt are not replayed.",
    )
    max_past_s: int = Field(
        default=7 * 86_400,
        gt=0,
        le=3_000_000_000,
        description="The archiving workers' --max-past-s: records they refused as stamped too far "
        "before their receipt are not replayed.",
    )

    _split = field_validator("publish", mode="before")(split_names)

    @field_validator("node_prefix")
    @classmethod
    def _printable_prefix(cls, prefix: str) -> str:
        if prefix and node_problem(prefix) is not None:
            msg = "the node prefix must be printable text of at most 128 bytes"
            raise ValueError(msg)
        return prefix
