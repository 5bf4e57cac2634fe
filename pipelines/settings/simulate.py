"""The simulated fleet of `tykpulse simulate`."""

from __future__ import annotations

from pydantic import Field, SecretStr

from pipelines.firehose.protocol import (
    MAX_RECORDS_PER_MESSAGE,
)
from pipelines.settings.base import EnvSettings


class SimulatorSettings(EnvSettings):
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
