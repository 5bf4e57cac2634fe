"""The Tyk bridges: Redis/Pump records and the webhook receiver."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from pipelines.firehose.protocol import (
    MAX_RECORDS_PER_MESSAGE,
)
from pipelines.settings.base import EnvSettings
from sinks.redact import checked_url


class TykBridgeSettings(EnvSettings):
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

    @field_validator("redis")
    @classmethod
    def _readable_url(cls, url: SecretStr) -> SecretStr:
        checked_url(url.get_secret_value(), "Redis URL")
        return url


class TykWebhookSettings(EnvSettings):
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
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a request's head and body may take to arrive; a slower one is answered 408 "
        "and closed.",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        description="Most connections served at once (lowered, with a warning, to what the descriptor "
        "limit holds); at the cap the longest-idle connection that never sent the secret is closed for "
        "a new one, else it is answered 503 and closed.",
    )
    flush_ms: int = Field(default=20, ge=0, description="Events are batched per name for at most this long.")
    message_records: int = Field(
        default=500, ge=1, le=MAX_RECORDS_PER_MESSAGE, description="Most events per firehose message."
    )
