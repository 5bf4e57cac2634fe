"""tykpulse bridge: feed the firehose from a real Tyk (Redis, webhooks); carry it to Kafka."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import redis
import zmq
from pydantic import SecretStr

from pipelines.bridges.faults import FaultInjector
from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.notification_lease import NotificationLease
from pipelines.bridges.publishing import BridgePublisher
from pipelines.bridges.tyk_lists import AnalyticsListStore, analytics_lists
from pipelines.bridges.tyk_notifications import NotificationListener
from pipelines.bridges.tyk_records import FirehoseConverter
from pipelines.bridges.tyk_redis import DrainConfig, TykRedisBridge
from pipelines.bridges.tyk_webhook_server import WebhookStats, exposure_error, parse_listen, serve
from pipelines.cli.curve import curve_session
from pipelines.cli.observe import NO_FLUSHES, serving
from pipelines.cli.options import pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.errors import ConfigurationError
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.keys import bridge_with_key
from pipelines.observe.service import Progress, ServiceWatch
from pipelines.security.curve import CurveSession
from pipelines.settings import (
    CurveSettings,
    NoticeSettings,
    ObservabilitySettings,
    PublisherSettings,
    TykBridgeSettings,
    TykWebhookSettings,
)

log = logging.getLogger(__name__)
SaltedT = TypeVar("SaltedT", TykBridgeSettings, TykWebhookSettings)

PUBLISH_FLAGS: dict[str, str | tuple[str, ...]] = {"connect": ("--publish", "--connect")}


@click.group("bridge")
def group() -> None:
    """Bridges between the firehose and other systems.

    \b
      tykpulse bridge tyk           analytics lists + cluster notifications from Tyk's Redis
      tykpulse bridge tyk-webhook   gateway events from Tyk's webhook event handler
      tykpulse bridge kafka         the firehose -> a Kafka topic, for the Faust workers

    --publish ENDPOINT connects to a proxy's frontend or a worker bound with @;
    --publish @tcp://*:PORT binds. See docs/tyk.md.
    """


def _publisher(settings: PublisherSettings, curve: CurveSession | None) -> BridgePublisher:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    publisher = FirehosePublisher(
        context,
        settings.endpoints(),
        node=settings.node,
        encoding=settings.encoding,
        sndhwm=settings.sndhwm,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        curve=curve,
        max_message_bytes=settings.max_message_bytes,
    )
    return BridgePublisher(publisher)


def _old_salt_variables(settings: SaltedT) -> SaltedT:
    """The bridges' salt variables before they took the workers' names, still read (with a warning)."""
    old = {"key_hash_salt": "TYKPULSE_KEY_SALT", "key_hash_salt_file": "TYKPULSE_KEY_SALT_FILE"}
    update: dict[str, Any] = {}
    for field, variable in old.items():
        value = os.environ.get(variable)
        if value is not None and field not in settings.model_fields_set:
            log.warning("%s is deprecated: set TYKPULSE_%s", variable, field.upper())
            update[field] = SecretStr(value) if field == "key_hash_salt" else value
    return settings.model_copy(update=update) if update else settings


def _redis_location(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password


@group.command("tyk")
@settings_options(PublisherSettings, flags=PUBLISH_FLAGS)
@settings_options(
    TykBridgeSettings,
    exclude=("fault_injection",),
    aliases={
        "drain_batch": "--batch",
        "key_hash_salt": "--key-salt",
        "key_hash_salt_file": "--key-salt-file",
    },
)
@settings_options(NoticeSettings, exclude=("notice_public_key",))
@settings_options(CurveSettings)
@settings_options(ObservabilitySettings, exclude=NO_FLUSHES)
@pass_settings(PublisherSettings, TykBridgeSettings, NoticeSettings, CurveSettings, ObservabilitySettings)
def tyk(
    publisher_settings: PublisherSettings,
    settings: TykBridgeSettings,
    notices: NoticeSettings,
    curve_settings: CurveSettings,
    observe: ObservabilitySettings,
) -> None:
    """Drain Tyk's analytics lists and notifications from Redis onto the firehose.

    Replaces Tyk Pump for the analytics lists (or feeds a Pump through
    --pump-copy-prefix). Records are moved atomically into processing lists,
    published, and released --release-delay-ms later: at least once; after a
    crash the parked records are published again (duplicates at most the batch
    in flight plus the last release delay's worth). Nothing is drained while no
    worker subscribes. KeySpaceUpdateNotification payloads are published with
    key digests; --node-secret keeps their signature verifiable (docs/tyk.md).
    """
    stop = stop_on_signals()
    try:
        faults = FaultInjector(settings.fault_injection)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        settings = bridge_with_key(_old_salt_variables(settings))
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    url = settings.redis.get_secret_value()
    client = redis.Redis.from_url(url, socket_timeout=30, health_check_interval=30)
    curve = curve_session(zmq.Context.instance(), curve_settings)
    publisher = _publisher(publisher_settings, curve)
    listener = NotificationListener(client, settings.channel) if settings.notifications else None
    # Several bridges on one Redis all hear every notification: the lease's holder alone publishes.
    # Named by host and bridge id (not the node, which holds the pid by default), so a bridge
    # restarted after a crash takes its own lease back at once.
    holder = f"{socket.gethostname()}:{settings.bridge_id or 'default'}"
    lease = NotificationLease(client, settings.channel, holder) if listener is not None else None
    store = AnalyticsListStore(
        client,
        analytics_lists(settings.key_prefix, settings.bridge_id, settings.pump_copy_prefix),
        copy_ttl_s=settings.pump_copy_ttl_s,
    )
    bridge = TykRedisBridge(
        store,
        publisher,
        FirehoseConverter(KeyDigester(settings.key_hash_salt.get_secret_value().encode())),
        config=DrainConfig(
            settings.drain_batch,
            settings.message_records,
            settings.poll_interval_s,
            settings.release_delay_ms,
        ),
        notifications=listener,
        lease=lease,
        faults=faults,
        node_secret=notices.node_secret.get_secret_value(),
    )
    if listener is not None and not notices.node_secret.get_secret_value():
        log.warning(
            "no --node-secret: KeySpaceUpdateNotification notices go out with digested keys and no "
            "signature, so a worker that verifies notices rejects them (bad_signature)"
        )
    log.info(
        "tyk bridge redis=%s publishing=%s node=%s batch=%d notifications=%s pump_copy_prefix=%r",
        _redis_location(url),
        publisher.publisher.addresses,
        publisher_settings.node,
        settings.drain_batch,
        settings.notifications,
        settings.pump_copy_prefix,
    )
    health = Progress(
        "drained", lambda: bridge.stats.moved + bridge.stats.notices, lambda: bridge.stats.redis_errors
    )
    try:
        with serving(observe, ServiceWatch("bridge tyk", bridge.stats.readings, health), "bridge tyk"):
            stats = bridge.run(stop)
    finally:
        if listener is not None:
            listener.close()
        client.close()
        publisher.close()
        if curve is not None:
            curve.close()
    log.info(
        "tyk bridge done moved=%d published=%d recovered=%d undecodable=%d notices=%d bad_notices=%d "
        "dropped_notices=%d set_aside_notices=%d redis_errors=%d",
        stats.moved,
        stats.published,
        stats.recovered,
        stats.undecodable,
        stats.notices,
        stats.bad_notices,
        stats.dropped_notices,
        stats.set_aside_notices,
        stats.redis_errors,
    )


@group.command("tyk-webhook")
@settings_options(PublisherSettings, flags=PUBLISH_FLAGS)
@settings_options(
    TykWebhookSettings, aliases={"key_hash_salt": "--key-salt", "key_hash_salt_file": "--key-salt-file"}
)
@settings_options(CurveSettings)
@settings_options(ObservabilitySettings, exclude=NO_FLUSHES)
@pass_settings(PublisherSettings, TykWebhookSettings, CurveSettings, ObservabilitySettings)
def tyk_webhook(
    publisher_settings: PublisherSettings,
    settings: TykWebhookSettings,
    curve_settings: CurveSettings,
    observe: ObservabilitySettings,
) -> None:
    """Receive Tyk's event-handler webhooks and publish each event as tyk.event.<Name>.

    Point Tyk's eh_web_hook_handler at http://HOST:PORT/tyk/events?org_id=..&api_id=..
    with the template shipped in pipelines/bridges/templates (see docs/tyk.md).
    Keys are digested before they leave this process.
    """
    # Checked before anything starts: an unsafe --listen is a usage error, not a half-started bridge.
    try:
        problem = exposure_error(settings, parse_listen(settings.listen)[0])
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    if problem is not None:
        raise click.UsageError(problem)
    try:
        settings = bridge_with_key(_old_salt_variables(settings))
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    stop = stop_on_signals()
    curve = curve_session(zmq.Context.instance(), curve_settings)
    publisher = _publisher(publisher_settings, curve)
    stats = WebhookStats()
    watch = ServiceWatch("bridge tyk-webhook", stats.readings)
    try:
        with serving(observe, watch, "bridge tyk-webhook"):
            serve(settings, publisher, stop, stats)
    finally:
        publisher.close()
        if curve is not None:
            curve.close()
    log.info(
        "tyk webhook done accepted=%d published=%d rejected=%s",
        stats.accepted,
        stats.published,
        dict(stats.rejected),
    )


def _add_kafka() -> None:
    # imported here, not at the top: this module defines the group bridge_kafka joins
    from pipelines.cli.commands import bridge_kafka

    group.add_command(bridge_kafka.command)


_add_kafka()
