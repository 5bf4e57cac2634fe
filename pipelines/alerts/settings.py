"""Settings of the alert evaluator (environment prefix TYKPULSE_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TYKPULSE_", frozen=True, extra="ignore")

    rules: str = Field(
        default="",
        description="Directory (or file) of alert rules in YAML (default: the rules shipped with tykpulse, "
        "the alerts/ directory of the repository, found wherever the command runs).",
    )
    webhook: str | None = Field(
        default=None,
        description="Alertmanager (or compatible receiver) URL; alerts are POSTed to URL/api/v2/alerts "
        "unless the URL already has a path.",
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one POST to the webhook.")
    generator_url: str = Field(
        default="",
        description="Base of each alert's generatorURL (default: file:// URL of the rules directory).",
    )
