"""Settings of the alert evaluator (environment prefix TYKPULSE_)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.redact import checked_url


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TYKPULSE_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    rules: str = Field(
        default="",
        description="Directory (or file) of alert rules in YAML (default: the rules shipped with tykpulse, "
        "the alerts/ directory of the repository, found wherever the command runs).",
    )
    webhook: str | None = Field(
        default=None,
        description="Alertmanager (or compatible receiver) URL; alerts are POSTed to URL/api/v2/alerts "
        "unless the URL already has a path. user:password@ in it is sent as HTTP basic authentication.",
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one POST to the webhook.")
    generator_url: str = Field(
        default="",
        description="Base of each alert's generatorURL (default: file:// URL of the rules directory).",
    )

    @field_validator("webhook")
    @classmethod
    def _readable_url(cls, url: str | None) -> str | None:
        if url:
            checked_url(url, "webhook URL")
        return url
