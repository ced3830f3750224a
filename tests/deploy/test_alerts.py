"""deploy/prometheus/alerts.yml against Prometheus's own tooling (promtool from
Debian's `prometheus` package, which scripts/test installs): the rules load,
their unit tests in alerts.test.yml pass, and every alert has a test in which
it fires."""

import pathlib
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus (scripts/test installs it when run as root)")
    return path


def test_rules_load():
    result = subprocess.run([promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_loads():
    result = subprocess.run([promtool(), "check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass():
    result = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_every_alert_is_tested_firing():
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    firing = {t["alertname"] for group in tests["tests"] for t in group.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    assert alerts, "no alerts found"
    assert sorted(alerts - firing) == [], "alerts.test.yml: add a case in which these fire"
