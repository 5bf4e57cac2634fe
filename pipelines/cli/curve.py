"""The CURVE session of a command's sockets, from its --curve-* options."""

from __future__ import annotations

from typing import Any

import click
import zmq

from pipelines.cli.signals import reload_on_sighup
from pipelines.errors import ConfigurationError
from pipelines.security.curve import CurveSession
from pipelines.settings import CurveSettings


def curve_session(context: zmq.Context[Any], settings: CurveSettings) -> CurveSession | None:
    """The process's CURVE session when keys are configured; SIGHUP re-reads the allowlist."""
    if not settings.enabled:
        if settings.curve_allow or settings.curve_server_key:
            msg = "--curve-allow/--curve-server-key need --curve-secret-key"
            raise click.UsageError(msg)
        return None
    try:
        session = CurveSession(context, settings)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    reload_on_sighup(session.reload)
    return session
