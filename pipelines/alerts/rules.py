"""Alert rules: YAML files in a directory, validated into frozen Rule objects.

A rule file holds one rule (a mapping) or several (`rules: [...]`):

    name: rate_limit_storm             # [a-z][a-z0-9_]*, unique
    severity: critical                 # critical | warning | info
    interval: 30s                      # how often the SQL runs (s, m, h)
    for: 1m                            # how long a series must keep firing before it is sent
    labels: {team: api-platform}       # added to every alert of the rule
    annotations:                       # str.format templates over the row's columns
      summary: "Storm on API {api_id}: {events} events"
    sql: |
      SELECT api_id, ... HAVING ...    # returns one row per firing series

The SQL returns the firing series and nothing else: every row is one alert
instance. Its String columns are the series' labels (its identity); the other
columns are values for the annotations.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_DURATION: Final = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str | int | float) -> float:
    """Seconds in '90s', '5m', '1h', '1m30s' (a bare number is seconds)."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        msg = f"not a duration: {text!r} (use e.g. 30s, 5m, 1h)"
        raise ValueError(msg)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    severity: Literal["critical", "warning", "info"]
    sql: str = Field(min_length=1)
    interval_s: float = Field(default=60.0, alias="interval", gt=0)
    for_s: float = Field(default=0.0, alias="for", ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    source: str = ""

    _durations = field_validator("interval_s", "for_s", mode="before")(parse_duration)


@dataclasses.dataclass(frozen=True, slots=True)
class RuleProblem:
    source: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    problems: tuple[RuleProblem, ...]


def _documents(path: Path) -> list[Any]:
    loaded = yaml.safe_load(path.read_text())
    if isinstance(loaded, dict) and "rules" in loaded:
        loaded = loaded["rules"]
    return loaded if isinstance(loaded, list) else [loaded]


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())


def shipped_rules() -> Path:
    """The rules tykpulse ships, wherever it is installed and whatever the current directory.

    One copy: `pipelines/alerts/shipped` is a link to the repository's top-level
    alerts/ (where operators read and edit them), which a wheel packs as package
    data, so an installed tykpulse has them inside the package.
    """
    location = resources.files("pipelines.alerts") / "shipped"
    # A zipped install would need extracting; tykpulse is installed as files (it has a CLI).
    if not isinstance(location, Path):
        msg = f"the shipped alert rules are not on the filesystem ({location}): pass --rules"
        raise TypeError(msg)
    return location.resolve()  # through the link: the real directory, where to read or edit them


def rules_location(configured: str) -> Path:
    """--rules when given, else the shipped rules."""
    return Path(configured).expanduser() if configured else shipped_rules()


def load_rules(location: Path) -> RuleSet:
    """Every rule in `location` (a directory of *.yaml/*.yml, or one file); problems instead of raising."""
    files = sorted([*location.glob("*.yaml"), *location.glob("*.yml")]) if location.is_dir() else [location]
    rules: list[Rule] = []
    problems: list[RuleProblem] = []
    if not files:
        problems.append(RuleProblem(str(location), "no rule files (*.yaml, *.yml)"))
    for path in files:
        try:
            documents = _documents(path)
        except (OSError, yaml.YAMLError) as exc:
            problems.append(RuleProblem(str(path), f"cannot read: {exc}"))
            continue
        for index, document in enumerate(documents):
            where = f"{path}[{index}]" if len(documents) > 1 else str(path)
            if not isinstance(document, dict):
                problems.append(RuleProblem(where, "a rule must be a mapping"))
                continue
            try:
                rules.append(Rule.model_validate({**document, "source": where}))
            except ValidationError as exc:
                problems.append(RuleProblem(where, _validation_message(exc)))
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.name in seen:
            problems.append(
                RuleProblem(rule.source, f"duplicate rule name {rule.name!r} (also in {seen[rule.name]})")
            )
        seen.setdefault(rule.name, rule.source)
    return RuleSet(tuple(r for r in rules if seen[r.name] == r.source), tuple(problems))
