"""Serving a command's /metrics, /healthz and /status, and announcing it to `tykpulse status`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import click

from pipelines.observe.discovery import Announcement, runtime_dir
from pipelines.observe.server import MetricsServer, Observed
from pipelines.settings import ObservabilitySettings

log = logging.getLogger(__name__)

# Commands other than run and worker have no flushes: the flush-age option is theirs only.
NO_FLUSHES = ("healthy_flush_age_s",)


@contextlib.contextmanager
def serving(settings: ObservabilitySettings, watch: Observed, command: str) -> Iterator[MetricsServer | None]:
    """The endpoint while the block runs (None with --no-metrics); a port in use is a usage error."""
    if not settings.metrics:
        yield None
        return
    try:
        server = MetricsServer(watch, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        msg = f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
        raise click.UsageError(msg) from exc
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
