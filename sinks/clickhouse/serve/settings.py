"""Settings of the ClickHouse HTTP endpoint served over the embedded engine (prefix TYKPULSE_)."""

from __future__ import annotations

from typing import Final

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.clickhouse.serve.reader_policy import ReaderLimits
from sinks.options import NameList, is_loopback, split_names

DEFAULT_LISTEN: Final = "127.0.0.1:8123"
OFF: Final = frozenset({"", "off", "no", "none", "false", "0"})


class ServeSettings(BaseSettings):
    """Who may read and write the embedded database over ClickHouse's HTTP interface."""

    model_config = SettingsConfigDict(
        env_prefix="TYKPULSE_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    serve_listen: str = Field(
        default=DEFAULT_LISTEN,
        description="Serve ClickHouse's HTTP interface for the embedded database on HOST:PORT "
        "('off' disables; only for chdb DSNs).",
    )
    serve_allow_remote: bool = Field(
        default=False, description="Allow listening on an address other than loopback."
    )
    reader_user: str = Field(default="default", description="Name of the read-only user.")
    reader_password: SecretStr = Field(
        default=SecretStr(""), description="Password of the read-only user (empty: none needed)."
    )
    writer_user: str = Field(default="tykpulse", description="Name of the read-write user.")
    writer_password: SecretStr | None = Field(
        default=None,
        description="Password of the read-write user; while unset nobody can write through the endpoint.",
    )
    serve_max_sessions: int = Field(default=64, gt=0, description="Open HTTP sessions kept at most.")
    serve_max_request_mb: int = Field(
        default=256,
        gt=0,
        description="Largest request body accepted from the writer, MiB (a reader's body, only ever its "
        "statement, is at most 512 KiB).",
    )
    serve_reader_max_execution_s: int = Field(
        default=60, gt=0, description="Longest a read-only query may run, seconds (readers may ask for less)."
    )
    serve_reader_max_memory_mb: int = Field(
        default=1024, gt=0, description="Memory one read-only query may use, MiB (readers may ask for less)."
    )
    serve_reader_max_result_rows: int = Field(
        default=10_000_000,
        gt=0,
        description="Rows one read-only query may return (readers may ask for fewer).",
    )
    serve_reader_max_result_mb: int = Field(
        default=256,
        gt=0,
        description="Result size of one read-only query, MiB, as blocks and as the formatted answer "
        "(readers may ask for less).",
    )
    serve_reader_max_threads: int = Field(
        default=4, gt=0, description="Threads one read-only query may use (readers may ask for fewer)."
    )
    serve_reader_max_concurrent: int = Field(
        default=4,
        gt=0,
        description="Read-only queries run at once; more wait. Writers have their own slots, so readers "
        "never take an insert's place; they do share the CPU (on a small host, lower this and the "
        "readers' threads).",
    )
    serve_max_decompressed_mb: int = Field(
        default=256,
        gt=0,
        description="Largest request body accepted once decompressed (Content-Encoding, decompress=1), MiB.",
    )
    serve_allowed_origins: NameList = Field(
        default=[],
        description="Browser origins (scheme://host[:port], repeatable) allowed to send requests; "
        "a request with any other Origin header is refused.",
    )
    serve_allowed_hosts: NameList = Field(
        default=[],
        description="Host header names accepted besides localhost, loopback and the listening addresses "
        "(repeatable; guards against DNS rebinding).",
    )
    serve_max_sessions_per_user: int = Field(
        default=16,
        gt=0,
        description="Open HTTP sessions kept per user; the writer's sessions have their own budget.",
    )
    serve_reader_max_inflight_mb: int = Field(
        default=512,
        gt=0,
        description="Memory read-only requests may hold at once, MiB: bodies (reserved before they are read, "
        "with serve_max_decompressed_mb when compressed) and results until sent; past it readers wait, "
        "and a result that does not fit gets 503. Writers are not counted.",
    )
    serve_max_connections: int = Field(
        default=256,
        gt=0,
        description="Open client connections kept at most; when full, a new one closes the connection that "
        "has waited longest for its next request (never a writer's, nor one whose query runs), or is "
        "closed itself.",
    )
    serve_max_session_timeout_s: int = Field(
        default=300, gt=0, description="Longest session_timeout a read-only session may ask for, seconds."
    )

    _split = field_validator("serve_allowed_origins", "serve_allowed_hosts", mode="before")(split_names)

    @field_validator("writer_password")
    @classmethod
    def _writer_password_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # an empty password would be a writer anyone on the host can be (writes, DDL, file() reads):
        # refused at start rather than taken as "no writer", which is what leaving it unset means
        if value is not None and not value.get_secret_value():
            msg = (
                "--writer-password (TYKPULSE_WRITER_PASSWORD) is set but empty: an empty password would let "
                "anyone who reaches the port write; set a password, or unset it to serve read-only"
            )
            raise ValueError(msg)
        return value

    def reader_limits(self) -> ReaderLimits:
        return ReaderLimits(
            max_execution_time=self.serve_reader_max_execution_s,
            max_memory_usage=self.serve_reader_max_memory_mb << 20,
            max_result_rows=self.serve_reader_max_result_rows,
            max_result_bytes=self.serve_reader_max_result_mb << 20,
            max_threads=self.serve_reader_max_threads,
        )

    @property
    def enabled(self) -> bool:
        return self.serve_listen.strip().lower() not in OFF

    def address(self) -> tuple[str, int]:
        """(host, port) to bind; raises ValueError for a malformed or forbidden address."""
        host, sep, port = self.serve_listen.strip().rpartition(":")
        if not sep or not port.isdigit():
            msg = f"serve address must be HOST:PORT, got {self.serve_listen!r}"
            raise ValueError(msg)
        host = host.strip("[]") or "127.0.0.1"
        if not self.serve_allow_remote and not is_loopback(host):
            msg = (
                f"refusing to serve on {host}: not a loopback address "
                "(set --serve-allow-remote to expose the database)"
            )
            raise ValueError(msg)
        return host, int(port)
