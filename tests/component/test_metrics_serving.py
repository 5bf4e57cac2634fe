"""Where a long-running command serves its metrics: the endpoint's lifetime and a port in use."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import click
import pytest

from pipelines.cli.observe import serving as cli_serving
from pipelines.observe.discovery import runtime_dir
from pipelines.observe.service import ServiceWatch
from pipelines.observe.serving import MetricsPortError, serving
from pipelines.settings import ObservabilitySettings
from tests.harness.processes import free_port

pytestmark = pytest.mark.component


def settings(tmp_path: Path, port: int) -> ObservabilitySettings:
    return ObservabilitySettings(metrics_port=port, runtime_dir=str(tmp_path))


def test_the_endpoint_is_served_and_announced_while_the_block_runs(tmp_path: Path) -> None:
    port = free_port()
    with serving(settings(tmp_path, port), ServiceWatch("proxy", dict), "proxy") as server:
        assert server is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
        assert list(runtime_dir(str(tmp_path)).iterdir()), "announced for `tykpulse status`"
    assert not list(runtime_dir(str(tmp_path)).iterdir()), "the announcement goes with the endpoint"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_a_port_in_use_is_a_configuration_error_and_on_the_command_line_a_usage_error(tmp_path: Path) -> None:
    """The Faust app (`faust -A`) serves through pipelines.observe, not through the command line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        watch, taken_settings = ServiceWatch("proxy", dict), settings(tmp_path, port)
        problem = f"cannot serve metrics on 127.0.0.1:{port}"
        with (
            pytest.raises(MetricsPortError, match=problem),
            serving(taken_settings, watch, "proxy"),
        ):
            pass
        with (
            pytest.raises(click.UsageError, match=problem),
            cli_serving(taken_settings, watch, "proxy"),
        ):
            pass
