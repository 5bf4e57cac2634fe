"""Passwords in DSNs and URLs never reach a log line or an error message, failure paths included."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from typing import cast

import pytest
import redis

from pipelines.alerts.alertmanager import AlertmanagerClient, alerts_url
from pipelines.alerts.state import Alert
from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.publishing import BridgePublisher
from pipelines.bridges.tyk_lists import AnalyticsListStore, analytics_lists
from pipelines.bridges.tyk_records import FirehoseConverter
from pipelines.bridges.tyk_redis import TykRedisBridge
from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import translate
from sinks.errors import SinkError
from sinks.redact import redact

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
