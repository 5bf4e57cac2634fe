"""Serving a command's /metrics, /healthz and /status, and announcing it to `tykpulse status`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from pipelines.observe.server import MetricsServer, Observed
from pipelines.observe.serving import MetricsPortError
from pipelines.observe.serving import serving as observe_serving
from pipelines.settings import ObservabilitySettings

# Commands other than run and worker have no flushes: the flush-age option is theirs only.
NO_FLUSHES = ("healthy_flush_age_s",)


@contextlib.contextmanager
def serving(settings: ObservabilitySettings, watch: Observed, command: str) -> Iterator[MetricsServer | None]:
    """The endpoint while the block runs (None with --no-metrics); a port in use is a usage error."""
    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(observe_serving(settings, watch, command))
    except MetricsPortError as exc:
        raise click.UsageError(str(exc)) from exc
    with stack:
        yield server
