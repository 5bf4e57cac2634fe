"""Alert rules over the rollup views, evaluated on a schedule and sent to Alertmanager.

rules.py         YAML rule files -> validated Rule objects (problems reported, never raised)
state.py         pending / firing / resolved per series; Alertmanager API v2 alert bodies
evaluator.py     runs the rules' SQL on their intervals; `check_rule` runs one once
alertmanager.py  POST /api/v2/alerts, resolved alerts kept until delivered
"""

from pipelines.alerts.alertmanager import AlertmanagerClient, alerts_url
from pipelines.alerts.evaluator import Evaluator, RuleCheck, check_rule
from pipelines.alerts.rules import Rule, RuleProblem, RuleSet, load_rules, parse_duration
from pipelines.alerts.settings import AlertSettings
from pipelines.alerts.state import Alert, RuleState

__all__ = [
    "Alert",
    "AlertSettings",
    "AlertmanagerClient",
    "Evaluator",
    "Rule",
    "RuleCheck",
    "RuleProblem",
    "RuleSet",
    "RuleState",
    "alerts_url",
    "check_rule",
    "load_rules",
    "parse_duration",
]
