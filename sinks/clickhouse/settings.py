"""Settings of the ClickHouse sink (environment prefix TYKPULSE_)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.clickhouse.contract import DATABASE
from sinks.redact import checked_url, query_names

DEFAULT_EMBEDDED_PATH: Final = Path("data") / "clickhouse"


def default_dsn() -> str:
    return f"chdb://{DEFAULT_EMBEDDED_PATH.resolve()}"


class ClickHouseSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TYKPULSE_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    clickhouse_dsn: str = Field(
        default_factory=default_dsn,
        description="Where rollups go: chdb:///abs/path (embedded, the default ./data/clickhouse) "
        "or http(s)://user:pass@host:port (a ClickHouse server).",
    )
    clickhouse_database: str = Field(
        default=DATABASE, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Database holding the rollups."
    )
    clickhouse_password: SecretStr | None = Field(
        default=None, description="Password for http(s) DSNs, if not in the DSN."
    )
    clickhouse_cluster: str = Field(
        default="",
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$",
        description="ClickHouse cluster the schema is laid out on (schema apply --clickhouse-cluster); "
        "writers then insert through its Distributed tables. Empty: a single server or the embedded engine.",
    )
    clickhouse_connect_timeout_s: float = Field(default=10.0, gt=0, description="Connect timeout (http).")
    clickhouse_send_receive_timeout_s: float = Field(
        default=60.0, gt=0, description="Send/receive timeout of one request (http)."
    )
    clickhouse_verify_tls: bool = Field(
        default=True,
        description="Verify the server's TLS certificate (https).",
    )
    clickhouse_ca_cert: str | None = Field(
        default=None,
        description="CA bundle (PEM) to verify the server with (https).",
    )
    clickhouse_client_cert: str | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS (https)."
    )
    clickhouse_client_cert_key: str | None = Field(
        default=None, description="Private key of the client certificate, if not in the same file."
    )

    @field_validator("clickhouse_dsn")
    @classmethod
    def _readable_url(cls, dsn: str) -> str:
        if dsn.lower().startswith(("http://", "https://")):
            parts = checked_url(dsn, "ClickHouse DSN")
            # clickhouse-connect takes these from user:password@ too, and failed with a TypeError
            # ("multiple values for argument 'password'") when both were given
            if query_names(parts) & {"password", "user", "username"}:
                msg = (
                    "ClickHouse DSN: give the user as user@ in the URL and the password as "
                    "TYKPULSE_CLICKHOUSE_PASSWORD (or user:password@), not as query parameters"
                )
                raise ValueError(msg)
        return dsn
