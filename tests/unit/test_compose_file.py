"""docker-compose.yml and the Dockerfile, checked statically (this machine has no Docker engine).

Every image is pinned; every tykpulse service runs a real subcommand of the click tree, with real
flags (none, in fact: configuration is by environment only) and environment variables that are
options of that subcommand; ports and endpoints agree across services; every long-running
service has a healthcheck and a restart policy; the worker can be scaled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pipelines.cli.main import cli

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
TYKPULSE = {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("tykpulse:")}
PINNED = re.compile(r"^[\w./-]+:v?\d+(\.\d+)+(-[\w.]+)?$")


def command_of(path: list[str]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group), f"{name}: not a subcommand of a group"
        sub = command.get_command(click.Context(command), name)  # subcommands are imported lazily
        assert sub is not None, f"`tykpulse {' '.join(path)}` is not a tykpulse command"
        command = sub
    return command


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    words = [a for a in argv if not a.startswith("-")]
    flags = [a.split("=", 1)[0] for a in argv if a.startswith("-")]
    return words, flags


def option_envvars(command: click.Command) -> set[str]:
    names = {p.envvar for p in command.params if isinstance(p, click.Option) and isinstance(p.envvar, str)}
    return names | {p.envvar for p in cli.params if isinstance(p, click.Option) and isinstance(p.envvar, str)}


def test_every_image_is_pinned() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        assert PINNED.match(image), f"{name}: image {image!r} is not pinned to a version"
        if image.startswith("tykpulse:"):
            assert service.get("build") == "."
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert base is not None
    assert re.match(r"^python:\d+\.\d+\.\d+-", base.group(1))


def test_tykpulse_services_run_real_commands_configured_by_environment() -> None:
    assert set(TYKPULSE) >= {"proxy", "simulator", "bridge", "worker", "schema"}
    for name, service in TYKPULSE.items():
        words, flags = split(service["command"])
        command = command_of(words)
        assert not isinstance(command, click.Group), f"{name}: `{' '.join(words)}` needs a subcommand"
        known_flags = {o for p in command.params for o in p.opts}
        assert set(flags) <= known_flags, f"{name}: unknown flags {set(flags) - known_flags}"
        assert not flags, f"{name}: configure by environment, not flags"
        env = {k for k in service["environment"] if k.startswith("TYKPULSE_")}
        unknown = env - option_envvars(command)
        assert not unknown, f"{name}: {sorted(unknown)} are not options of `tykpulse {' '.join(words)}`"


def test_long_running_services_have_healthchecks_and_restart_policies() -> None:
    for name, service in SERVICES.items():
        one_shot = service.get("restart") == "no"
        assert service.get("restart") in ("no", "unless-stopped", "always", "on-failure"), name
        healthcheck = service.get("healthcheck", {})
        if one_shot:
            continue
        assert healthcheck.get("test"), f"{name}: no healthcheck"
        assert not healthcheck.get("disable"), name


def test_endpoints_and_ports_agree() -> None:
    proxy = SERVICES["proxy"]["environment"]
    front = int(proxy["TYKPULSE_FRONTEND"].rsplit(":", 1)[1])
    back = int(proxy["TYKPULSE_BACKEND"].rsplit(":", 1)[1])
    assert SERVICES["simulator"]["environment"]["TYKPULSE_CONNECT"] == f"tcp://proxy:{front}"
    assert SERVICES["bridge"]["environment"]["TYKPULSE_FIREHOSE"] == f"tcp://proxy:{back}"
    assert f"', {back})" in " ".join(SERVICES["proxy"]["healthcheck"]["test"])
    worker = SERVICES["worker"]
    port = worker["environment"]["TYKPULSE_METRICS_PORT"]
    assert f":{port}/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["expose"] == [port]
    assert "ports" not in worker, "a host port would stop `--scale worker=N`"
    assert "container_name" not in worker
    for name in ("bridge", "worker"):
        assert SERVICES[name]["environment"]["TYKPULSE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for name in ("worker", "schema"):
        assert "@clickhouse:8123" in SERVICES[name]["environment"]["TYKPULSE_CLICKHOUSE_DSN"]
    assert SERVICES["simulator"]["profiles"] == ["demo"]
    assert "grafana-clickhouse-datasource" in SERVICES["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    mounts = SERVICES["grafana"]["volumes"]
    assert "./dashboards/provisioning/datasources:/etc/grafana/provisioning/datasources:ro" in mounts


def test_docs_name_what_compose_uses() -> None:
    docs = (ROOT / "docs" / "scaling.md").read_text() + (ROOT / "README.md").read_text()
    assert "docker compose up -d --scale worker=" in docs
    used = {k for s in TYKPULSE.values() for k in s["environment"] if k.startswith("TYKPULSE_")}
    assert not {v for v in used if v not in docs} - {"TYKPULSE_LOG_LEVEL"}, (
        "document every variable compose sets"
    )
