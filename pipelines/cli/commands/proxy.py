"""tykpulse proxy: the XSUB/XPUB forwarder."""

from __future__ import annotations

import threading

import click
import zmq

from pipelines.cli.options import pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.proxy import FirehoseProxy, run_in_thread
from pipelines.settings import ProxySettings


@click.command("proxy")
@settings_options(ProxySettings)
@pass_settings(ProxySettings)
def command(settings: ProxySettings) -> None:
    """Forward the firehose: publishers connect to --frontend, workers to --backend.

    Frames pass unchanged (sequence numbers stay end to end); subscriptions
    flow upstream, so publishers can wait for subscribers through the proxy.
    """
    stop = stop_on_signals()
    proxy = FirehoseProxy(
        zmq.Context.instance(),
        [parse_endpoint(e, bind_by_default=True) for e in settings.frontend],
        [parse_endpoint(e, bind_by_default=True) for e in settings.backend],
        hwm=settings.hwm,
    )
    thread: threading.Thread = run_in_thread(proxy)
    click.echo(
        f"proxy frontend={' '.join(proxy.frontend_addresses)} backend={' '.join(proxy.backend_addresses)}"
    )
    stop.wait()
    proxy.stop()
    thread.join(timeout=5)
    proxy.close()
