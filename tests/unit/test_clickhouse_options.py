"""How http(s) DSN settings become clickhouse-connect options."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from sinks.clickhouse.client import http_options
from sinks.clickhouse.settings import ClickHouseSettings

pytestmark = pytest.mark.unit


def test_the_scheme_decides_tls_not_the_port() -> None:
    assert http_options(ClickHouseSettings(clickhouse_dsn="https://ch:8123"))["interface"] == "https"
    assert http_options(ClickHouseSettings(clickhouse_dsn="HTTP://ch:8443"))["interface"] == "http"


def test_defaults_verify_tls_and_send_only_what_is_set() -> None:
    options = http_options(ClickHouseSettings(clickhouse_dsn="https://u@ch"))
    assert options == {"interface": "https", "connect_timeout": 10.0, "send_receive_timeout": 60.0}


def test_tls_files_password_and_timeouts_are_passed() -> None:
    settings = ClickHouseSettings(
        clickhouse_dsn="https://reporter@ch.internal:8443/tykpulse",
        clickhouse_password=SecretStr("pw"),
        clickhouse_verify_tls=False,
        clickhouse_ca_cert="/etc/ca.pem",
        clickhouse_client_cert="/etc/client.pem",
        clickhouse_client_cert_key="/etc/client.key",
        clickhouse_connect_timeout_s=3,
        clickhouse_send_receive_timeout_s=30,
    )
    assert http_options(settings) == {
        "interface": "https",
        "connect_timeout": 3.0,
        "send_receive_timeout": 30.0,
        "password": "pw",
        "verify": False,
        "ca_cert": "/etc/ca.pem",
        "client_cert": "/etc/client.pem",
        "client_cert_key": "/etc/client.key",
    }
