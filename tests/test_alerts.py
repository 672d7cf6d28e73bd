"""deploy/alerts.yml is valid Prometheus rule syntax, its alerts fire when they should (promtool's
rule unit tests in deploy/alerts.test.yml), and every metric it names is one QuantLab exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from quantlab import telemetry

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing; the test command installs it (Debian package "
                    "'prometheus'), or run: sudo apt-get install prometheus")
    return path


def metric_names_in(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings (label values)
    expr = re.sub(r"\{[^}]*\}", "", expr)           # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)          # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[match.end():].lstrip()[:1]
        if following != "(" and match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def test_rules_are_valid_prometheus_syntax() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(DEPLOY / "alerts.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 3 rules found" in out.stdout


def test_alerts_fire_exactly_when_expected() -> None:
    out = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=DEPLOY,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_three_required_alerts_exist_with_their_thresholds() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    assert "> 1800" in rules["BacktestRunningTooLong"]["expr"]        # 30 minutes
    assert "[5m]" in rules["BacktestFailureRateHigh"]["expr"]
    assert "> 0.10" in rules["BacktestFailureRateHigh"]["expr"]       # 10 %
    assert "> 10" in rules["BacktestQueueBacklog"]["expr"]


def test_every_metric_an_alert_names_is_exposed() -> None:
    exposed = telemetry.metric_names()
    for group in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            unknown = metric_names_in(rule["expr"]) - exposed
            assert not unknown, f"{rule['alert']} names metrics QuantLab does not expose: {unknown}"


def test_metric_name_extraction_sees_through_functions_and_labels() -> None:
    expr = 'sum by (strategy) (rate(backtest_total{status="failed"}[5m])) / max(backtest_queue_size)'
    assert metric_names_in(expr) == {"backtest_total", "backtest_queue_size"}
