"""The compose stack's files, read together: every name one of them uses exists where it points.

docker-compose.yml, Grafana's provisioning (dashboards/provisioning/), the dashboards,
Prometheus' config (compose/prometheus.yml) with the rules (alerts/prometheus/), Alertmanager's
config and docs/bi.md's provisioning sketch are parsed (there is no Docker engine here):

- every ${VAR} a provisioning file reads is in the Grafana service's environment;
- every bind mount's source exists in the repository, and the provisioning, dashboards, config
  and rules land where the other files look for them (provider path, rule_files glob);
- every host:port a file names (the datasource, scrape targets, Alertmanager, `alerts run`'s
  webhook) is a compose service listening on that port;
- every long-running tykpulse service is scraped, on the TYKPULSE_METRICS_PORT it sets;
- every metric a rule or dashboard names is defined in pipelines/observe/metrics.py;
- docs/bi.md and docs/operations.md show the environment names and mounts compose uses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
VARIABLE = re.compile(r"\$\{(\w+)")
METRIC = re.compile(r"\btykpulse_[a-z_]+")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def mounts(service: str) -> dict[str, Path]:
    """Container path -> repository path of the service's bind mounts (named volumes left out)."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def in_container(service: str, path: str) -> Path:
    """The repository file or directory seen at `path` inside `service`."""
    for target, source in sorted(mounts(service).items(), key=lambda item: -len(item[0])):
        if path == target or path.startswith(target + "/"):
            return source / PurePosixPath(path).relative_to(target)
    msg = f"{service}: nothing is mounted at {path}"
    raise AssertionError(msg)


def listens(service: str, port: int) -> bool:
    """True when `service` (a compose service) listens on `port` inside the network."""
    spec = SERVICES[service]
    published = {str(p).rsplit(":", 1)[-1] for p in spec.get("ports", [])}
    exposed = {str(p) for p in spec.get("expose", [])}
    env = spec.get("environment", {})
    return str(port) in published | exposed or str(port) in {str(v) for v in env.values()}


def host_port(address: str) -> tuple[str, int]:
    address = re.sub(r"^\w+://", "", address).split("/", 1)[0].rsplit("@", 1)[-1]
    host, port = address.rsplit(":", 1)
    return host, int(port)


def defined_metrics() -> set[str]:
    return set(METRIC.findall((ROOT / "pipelines" / "observe" / "metrics.py").read_text()))


def base_name(sample: str) -> str:
    for suffix in SUFFIXES:
        if sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample


def expand(value: str, env: dict[str, str]) -> str:
    """`value` with ${VAR} replaced from `env`, as Grafana reads its provisioning."""
    return VARIABLE.sub(lambda m: env[m.group(1)], value.replace("}", ""))


def test_every_bind_mount_exists_in_the_repository() -> None:
    for name in SERVICES:
        for target, source in mounts(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is not in the repository"


def test_grafana_reads_the_datasource_and_dashboards_where_compose_puts_them() -> None:
    env = SERVICES["grafana"]["environment"]
    datasources = in_container("grafana", "/etc/grafana/provisioning/datasources")
    providers = in_container("grafana", "/etc/grafana/provisioning/dashboards")
    uids = set()
    for path in sorted(datasources.glob("*.y*ml")):
        text = path.read_text()
        settings = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for variable in VARIABLE.findall(settings):
            assert variable in env, f"{path.name} reads ${{{variable}}}, not set for grafana"
        for source in yaml.safe_load(text)["datasources"]:
            uids.add(source["uid"])
            data = source["jsonData"]
            host = VARIABLE.sub(lambda m: "${" + m.group(1), data["host"])
            host = env[VARIABLE.findall(host)[0]] if VARIABLE.search(host) else host
            port = (
                int(env[VARIABLE.findall(data["port"])[0]])
                if VARIABLE.search(str(data["port"]))
                else data["port"]
            )
            assert host in SERVICES, f"datasource host {host!r} is not a compose service"
            assert listens(host, port), f"{host} does not listen on {port}"
            assert source["type"] in env["GF_INSTALL_PLUGINS"]
    for path in sorted(providers.glob("*.y*ml")):
        for provider in yaml.safe_load(path.read_text())["providers"]:
            folder = in_container("grafana", provider["options"]["path"])
            dashboards = sorted(folder.glob("*.json"))
            assert len(dashboards) >= 5, f"{provider['options']['path']}: no dashboards there"
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        variables = json.loads(path.read_text())["templating"]["list"]
        (source,) = [v for v in variables if v["name"] == "datasource"]
        assert source["current"]["value"] in uids, (
            f"{path.name}: datasource {source['current']} not provisioned"
        )
        for metric in METRIC.findall(path.read_text()):
            assert base_name(metric) in defined_metrics(), f"{path.name}: {metric} is not a metric"


def prometheus() -> dict[str, Any]:
    command = SERVICES["prometheus"]["command"]
    (config,) = [c.split("=", 1)[1] for c in command if c.startswith("--config.file=")]
    loaded: dict[str, Any] = yaml.safe_load(in_container("prometheus", config).read_text())
    return loaded


def targets(config: dict[str, Any]) -> list[tuple[str, int]]:
    found = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            found += [host_port(t) for t in static["targets"]]
        for dns in job.get("dns_sd_configs", []):
            found += [(name, int(dns["port"])) for name in dns["names"]]
    return found


def test_prometheus_scrapes_every_tykpulse_service_on_its_metrics_port() -> None:
    config = prometheus()
    scraped = targets(config)
    for host, port in scraped:
        assert host in SERVICES, f"scrape target {host} is not a compose service"
        assert SERVICES[host]["environment"].get("TYKPULSE_METRICS_PORT") == str(port), host
        assert str(port) in {str(p) for p in SERVICES[host].get("expose", [])}, (
            f"{host} does not expose {port}"
        )
        assert SERVICES[host]["environment"].get("TYKPULSE_METRICS_HOST") == "0.0.0.0"  # noqa: S104
    observed = {n for n, s in SERVICES.items() if "TYKPULSE_METRICS_PORT" in s.get("environment", {})}
    assert observed == {host for host, _ in scraped}, "a service with an endpoint is not scraped"
    assert {"proxy", "bridge", "worker"} <= observed
    for host, port in (
        host_port(t)
        for a in config["alerting"]["alertmanagers"]
        for s in a["static_configs"]
        for t in s["targets"]
    ):
        assert host == "alertmanager"
        assert listens(host, port)


def test_prometheus_loads_every_shipped_rule_and_the_rules_name_defined_metrics() -> None:
    config = prometheus()
    loaded = set()
    for pattern in config["rule_files"]:
        directory = in_container("prometheus", str(PurePosixPath(pattern).parent))
        loaded |= set(directory.glob(PurePosixPath(pattern).name))
    shipped = set((ROOT / "alerts" / "prometheus").glob("*.yml"))
    assert loaded == shipped, "a rule file is not loaded"
    metrics = defined_metrics()
    for path in sorted(shipped):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for metric in METRIC.findall(rule["expr"]):
                    assert base_name(metric) in metrics, f"{rule['alert']}: {metric} is not defined"


def test_alertmanager_receives_the_rollup_alerts() -> None:
    alerts = SERVICES["alerts"]
    assert alerts["command"] == ["alerts", "run"]
    host, port = host_port(alerts["environment"]["TYKPULSE_WEBHOOK"])
    assert host == "alertmanager"
    assert listens(host, port)
    command = SERVICES["alertmanager"]["command"]
    (config,) = [c.split("=", 1)[1] for c in command if c.startswith("--config.file=")]
    routes = yaml.safe_load(in_container("alertmanager", config).read_text())
    receivers = {r["name"] for r in routes["receivers"]}
    assert routes["route"]["receiver"] in receivers
    for name in ("prometheus", "alerts"):
        assert "alertmanager" in SERVICES[name]["depends_on"]


def test_the_docs_show_what_compose_does() -> None:
    bi = (ROOT / "docs" / "bi.md").read_text()
    sketch = yaml.safe_load(re.search(r"```yaml\n(.*?)```", bi, re.DOTALL).group(1))  # type: ignore[union-attr]
    grafana = SERVICES["grafana"]
    assert set(sketch["grafana"]["environment"]) <= set(grafana["environment"]), "docs/bi.md env names"
    assert {v.removesuffix(":ro") for v in sketch["grafana"]["volumes"]} <= {
        v.removesuffix(":ro") for v in grafana["volumes"]
    }, "docs/bi.md mounts"
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name in ("compose/prometheus.yml", "compose/alertmanager.yml", "alerts/prometheus/"):
        assert name in operations, f"docs/operations.md does not mention {name}"
    for port in ("9090", "9093", "9464"):
        assert port in operations
