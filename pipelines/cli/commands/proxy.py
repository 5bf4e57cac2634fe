"""tykpulse proxy: the XSUB/XPUB forwarder."""

from __future__ import annotations

import threading
from typing import Any

import click
import zmq

from pipelines.cli.curve import curve_session
from pipelines.cli.observe import NO_FLUSHES, serving
from pipelines.cli.options import pass_settings, settings_options
from pipelines.cli.signals import reload_on_sighup, stop_on_signals
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.proxy import FirehoseProxy, run_in_thread
from pipelines.observe.service import ServiceWatch
from pipelines.settings import CurveSettings, ObservabilitySettings, ProxySettings


@click.command("proxy")
@settings_options(ProxySettings)
@settings_options(CurveSettings)
@settings_options(ObservabilitySettings, exclude=NO_FLUSHES)
@pass_settings(ProxySettings, CurveSettings, ObservabilitySettings)
def command(settings: ProxySettings, curve_settings: CurveSettings, observe: ObservabilitySettings) -> None:
    """Forward the firehose: publishers connect to --frontend, workers to --backend.

    Frames pass unchanged (sequence numbers stay end to end); subscriptions
    flow upstream, so publishers can wait for subscribers through the proxy.
    With CURVE both sides admit the keys in --curve-allow; SIGHUP re-reads it.
    /metrics counts the frames and bytes forwarded each way (--metrics-port).
    """
    stop = stop_on_signals()
    context: zmq.Context[Any] = zmq.Context.instance()
    curve = curve_session(context, curve_settings)
    proxy = FirehoseProxy(
        context,
        [parse_endpoint(e, bind_by_default=True) for e in settings.frontend],
        [parse_endpoint(e, bind_by_default=True) for e in settings.backend],
        hwm=settings.hwm,
        max_message_bytes=settings.max_message_bytes,
        curve=curve,
    )
    if curve is not None:
        session = curve

        def reload() -> None:
            session.reload()
            proxy.refresh()

        reload_on_sighup(reload)  # replaces the session's own: the sockets rebind too
    thread: threading.Thread = run_in_thread(proxy)
    click.echo(
        f"proxy frontend={' '.join(proxy.frontend_addresses)} backend={' '.join(proxy.backend_addresses)}"
    )

    def health() -> tuple[bool, str]:
        alive = thread.is_alive()
        return alive, "ok: forwarding" if alive else "unhealthy: the forwarding thread stopped"

    with serving(observe, ServiceWatch("proxy", proxy.statistics, health), "proxy"):
        stop.wait()
        proxy.stop()
    thread.join(timeout=5)
    proxy.close()
    if curve is not None:
        curve.close()
