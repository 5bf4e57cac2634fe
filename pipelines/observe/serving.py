"""A long-running command's /metrics, /healthz and /status, served and announced to `tykpulse status`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from pipelines.errors import ConfigurationError
from pipelines.observe.discovery import Announcement, runtime_dir
from pipelines.observe.server import MetricsServer, Observed
from pipelines.settings import ObservabilitySettings

log = logging.getLogger(__name__)


class MetricsPortError(ConfigurationError):
    """The metrics endpoint cannot listen where the settings say (a port in use, an unknown host)."""


@contextlib.contextmanager
def serving(settings: ObservabilitySettings, watch: Observed, command: str) -> Iterator[MetricsServer | None]:
    """The endpoint while the block runs (None with metrics off), announced as `command`."""
    if not settings.metrics:
        yield None
        return
    try:
        server = MetricsServer(watch, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        msg = f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
        raise MetricsPortError(msg) from exc
    server.start()
    announcement = None
    try:
        announcement = Announcement(runtime_dir(settings.runtime_dir), command, server.url)
    except OSError as exc:
        log.warning("cannot announce the metrics endpoint for `tykpulse status`: %s", exc)
    try:
        yield server
    finally:
        if announcement is not None:
            announcement.remove()
        server.close()
