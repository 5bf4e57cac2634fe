"""Passwords in DSNs and URLs never reach a log line or an error message, failure paths included."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import socket
import threading
from collections.abc import Callable
from typing import cast

import pytest
import redis

from pipelines.alerts.alertmanager import AlertmanagerClient, alerts_url
from pipelines.alerts.settings import AlertSettings
from pipelines.alerts.state import Alert
from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.publishing import BridgePublisher
from pipelines.bridges.tyk_lists import AnalyticsListStore, analytics_lists
from pipelines.bridges.tyk_records import FirehoseConverter
from pipelines.bridges.tyk_redis import TykRedisBridge
from pipelines.settings.kafka import KafkaSettings
from pipelines.settings.tyk import TykBridgeSettings
from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import translate
from sinks.errors import SinkError
from sinks.redact import redact
from tests.harness.alert_receiver import AlertReceiver

PASSWORD = "Pa55-w0rd-never-logged"


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


@pytest.mark.parametrize(
    "text",
    [
        f"redis://:{PASSWORD}@10.0.0.1:6379/0",
        f"Error connecting to rediss://tyk:{PASSWORD}@redis:6380/1.",
        f"http://default:{PASSWORD}@clickhouse:8123/tykpulse?secure=0",
        f"http://ch:8123/?user=w&password={PASSWORD}",
        f"https://{PASSWORD}@alertmanager:9093/api/v2/alerts",
    ],
)
def test_redact_removes_url_passwords(text: str) -> None:
    assert PASSWORD not in redact(text)


def test_redact_removes_known_secrets_and_keeps_the_rest() -> None:
    assert redact(f"sasl login failed for {PASSWORD}", PASSWORD) == "sasl login failed for ***"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact("http://user:pw@h:1/x") == "http://user:***@h:1/x"


class _NoSubscriber:
    def maybe_heartbeat(self) -> None:
        pass

    def has_subscriber(self, topic: str) -> bool:
        return True


def test_unreachable_redis_with_a_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    bridge = TykRedisBridge(
        AnalyticsListStore(client, analytics_lists("analytics-", "", "")),
        cast(BridgePublisher, _NoSubscriber()),
        FirehoseConverter(KeyDigester(b"k")),
    )
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    try:
        bridge.run(stop)
    finally:
        timer.cancel()
        client.close()
    assert bridge.stats.redis_errors >= 1
    assert "redis error=" in caplog.text
    assert PASSWORD not in everything_logged(caplog)


def test_redis_error_quoting_its_url_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    class Failing:
        def maybe_heartbeat(self) -> None:
            msg = f"Error connecting to redis://:{PASSWORD}@cache:6379/0"
            raise redis.ConnectionError(msg)

    bridge = TykRedisBridge(
        cast(AnalyticsListStore, None), cast(BridgePublisher, Failing()), FirehoseConverter(KeyDigester())
    )
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        bridge.run(stop)
    finally:
        timer.cancel()
    assert "redis error=" in caplog.text
    assert PASSWORD not in everything_logged(caplog)


def test_unreachable_clickhouse_http_dsn_with_a_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = ClickHouseSettings(
        clickhouse_dsn=f"http://writer:{PASSWORD}@127.0.0.1:{closed_port()}/tykpulse",
        clickhouse_connect_timeout_s=1,
    )
    with pytest.raises(SinkError) as failed:
        connect(settings)
    logging.getLogger("test").error("sink failed: %s", failed.value)
    assert PASSWORD not in str(failed.value)
    assert PASSWORD not in everything_logged(caplog)


def test_a_driver_error_quoting_the_dsn_is_redacted() -> None:
    error = translate(OSError(f"cannot reach http://default:{PASSWORD}@ch:8123"), "insert", "traffic_1m")
    assert PASSWORD not in str(error)


def test_alertmanager_failure_with_a_password_in_the_webhook(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = AlertmanagerClient(f"http://am:{PASSWORD}@127.0.0.1:{closed_port()}", timeout_s=0.5)
    now = dt.datetime.now(dt.UTC)
    alert = Alert({"alertname": "x"}, {}, now, now, "http://tykpulse/")
    assert not client.send([alert])
    assert "alerts not delivered" in caplog.text
    assert PASSWORD not in everything_logged(caplog)


def test_a_bad_webhook_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="webhook") as refused:
        alerts_url(f"ftp://am:{PASSWORD}@host/")
    assert PASSWORD not in str(refused.value)


# Found by a secrets audit: a password holding an unencoded '#', '/' or '?' ends a URL's authority
# there, so urllib read the rest as the port and every command crashed with a traceback ending in
# "Port could not be cast to integer value as '<the password's start>'"; pydantic's own errors
# quoted refused values whole.
@pytest.mark.parametrize("cut", ["#", "/", "?"])
def test_a_malformed_url_is_refused_without_any_of_its_password(cut: str) -> None:
    start, end = "Pa55start", "w0rdEnd"
    secret = f"{start}{cut}{end}"
    attempts: list[Callable[[], object]] = [
        lambda: ClickHouseSettings(clickhouse_dsn=f"http://chuser:{secret}@127.0.0.1:8123/"),
        lambda: ClickHouseSettings(clickhouse_dsn=f"https://chuser:{secret}@127.0.0.1:8443/"),
        # a str as from the environment: pydantic validates it into the SecretStr its __init__ is typed with
        lambda: TykBridgeSettings(redis=f"redis://:{secret}@127.0.0.1:6379/0"),  # type: ignore[arg-type]
        lambda: AlertSettings(webhook=f"http://am:{secret}@alertmanager:9093/"),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="percent-encode") as refused:
            attempt()
        assert start not in str(refused.value)
        assert end not in str(refused.value)


def test_credentials_in_the_kafka_bootstrap_are_refused_without_quoting_them() -> None:
    with pytest.raises(ValueError, match="without credentials") as refused:
        KafkaSettings(kafka_bootstrap=f"kuser:{PASSWORD}@127.0.0.1:9092")
    assert PASSWORD not in str(refused.value)


def test_a_webhook_without_a_port_and_with_a_password_fails_as_a_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # urllib raised http.client.InvalidURL (a ValueError quoting the password) and alerts run died
    caplog.set_level(logging.DEBUG)
    client = AlertmanagerClient(f"http://am:{PASSWORD}@alertmanager.invalid/", timeout_s=0.5)
    now = dt.datetime.now(dt.UTC)
    assert not client.send([Alert({"alertname": "x"}, {}, now, now, "http://tykpulse/")])
    assert "alerts not delivered" in caplog.text
    assert PASSWORD not in everything_logged(caplog)


def test_a_user_and_password_in_the_webhook_are_sent_as_basic_authentication(
    alert_receiver: AlertReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    # urllib cannot send a URL's userinfo: with an explicit port the host was 'am:password@host'
    # and every delivery failed ("Name or service not known")
    caplog.set_level(logging.DEBUG)
    host_port = alert_receiver.url.removeprefix("http://")
    client = AlertmanagerClient(f"http://am%40corp:{PASSWORD}@{host_port}", timeout_s=5)
    now = dt.datetime.now(dt.UTC)
    assert client.send([Alert({"alertname": "x"}, {}, now, now, "http://tykpulse/")])
    assert [path for path, _, _ in alert_receiver.posts] == ["/api/v2/alerts"]
    expected = "Basic " + base64.b64encode(f"am@corp:{PASSWORD}".encode()).decode()
    assert alert_receiver.authorizations == [expected]
    assert PASSWORD not in everything_logged(caplog)
