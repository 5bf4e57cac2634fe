"""Reading a running command's /metrics, /healthz and /status, and its announcement to `tykpulse status`."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.tykpulse import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> tuple[int, bytes]:
    """Status code and body; a 4xx/5xx answer is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback test server
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(url: str) -> Samples:
    """(sample name, sorted labels) -> value, as Prometheus parses the endpoint's /metrics."""
    code, body = get(url + "/metrics")
    assert code == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def status(url: str) -> dict[str, Any]:
    code, body = get(url + "/status")
    assert code == 200, body
    data: dict[str, Any] = json.loads(body)
    return data


def announced_url(runtime_dir: Path, proc: subprocess.Popen[Any], timeout: float = 120.0) -> str:
    """The endpoint `proc` announced for `tykpulse status`, once it answers /healthz with 200."""
    found: list[str] = []

    def ready() -> bool:
        assert proc.poll() is None, f"{proc.args!s} exited with {proc.returncode}"
        for path in runtime_dir.glob(f"*-{proc.pid}.json"):
            url = str(json.loads(path.read_text())["url"])
            if get(url + "/healthz")[0] == 200:
                found.append(url)
                return True
        return False

    wait_until(ready, f"the endpoint of {proc.args!s}", timeout)
    return found[0]
