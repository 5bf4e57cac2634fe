"""Every setting of the stream side, typed, in one place.

Each class covers one boundary. Values come from (highest first) CLI flags,
environment variables `TYKPULSE_<FIELD>` and the defaults of each class; the CLI
derives its options from these classes (pipelines.cli.options), so `--help`
and the environment always agree with the code.
"""

from pipelines.settings.base import EnvSettings
from pipelines.settings.journal import ArchiveSettings, ReplaySettings, WalSettings
from pipelines.settings.kafka import FaustWorkerSettings, KafkaBridgeSettings, KafkaSettings
from pipelines.settings.simulate import SimulatorSettings
from pipelines.settings.stream import (
    CurveSettings,
    FirehoseSettings,
    NoticeSettings,
    ObservabilitySettings,
    ProxySettings,
    PublisherSettings,
    WorkerSettings,
)
from pipelines.settings.tyk import TykBridgeSettings, TykWebhookSettings

__all__ = [
    "ArchiveSettings",
    "CurveSettings",
    "EnvSettings",
    "FaustWorkerSettings",
    "FirehoseSettings",
    "KafkaBridgeSettings",
    "KafkaSettings",
    "NoticeSettings",
    "ObservabilitySettings",
    "ProxySettings",
    "PublisherSettings",
    "ReplaySettings",
    "SimulatorSettings",
    "TykBridgeSettings",
    "TykWebhookSettings",
    "WalSettings",
    "WorkerSettings",
]
