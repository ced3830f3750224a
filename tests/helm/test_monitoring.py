"""What the chart ships for monitoring: the alerts of deploy/prometheus as a
PrometheusRule, the dashboard of deploy/grafana as a Grafana-sidecar
ConfigMap. Helm reads no file outside the chart, so the chart holds copies;
these must stay identical to deploy/'s."""

import json
import pathlib

import pytest
import yaml

from chartkit import CHART, FEATURES, RELEASE, render

REPO = CHART.parents[1]
COPIES = {
    "files/alerts.yml": REPO / "deploy" / "prometheus" / "alerts.yml",
    "files/roomcast.json": REPO / "deploy" / "grafana" / "roomcast.json",
}


@pytest.mark.parametrize("copy", sorted(COPIES))
def test_chart_copies_equal_deploy_files(copy):
    original = COPIES[copy]
    assert (CHART / copy).read_bytes() == original.read_bytes(), (
        f"helm/roomcast/{copy} differs from {original.relative_to(REPO)}: cp {original.relative_to(REPO)} helm/roomcast/{copy}")


def test_prometheus_rule_holds_every_alert():
    out = render(FEATURES["monitoring"])
    rule = out.get("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == f"{RELEASE}-roomcast"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    expected = yaml.safe_load(COPIES["files/alerts.yml"].read_text())
    assert rule["spec"] == expected
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"RoomcastEdgesGone", "RoomcastControlPlanesGone", "RoomcastJetStreamReplicasLost"} <= alerts
    # Annotations keep their Prometheus templates (Helm does not expand them).
    summaries = [r["annotations"]["summary"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any("{{ $labels.instance }}" in s for s in summaries)
    assert render().all("PrometheusRule") == []


def test_grafana_dashboard_config_map():
    out = render(FEATURES["monitoring"])
    (cm,) = [c for c in out.all("ConfigMap") if c["metadata"]["name"] == f"{RELEASE}-roomcast-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Realtime"}
    dashboard = json.loads(cm["data"]["roomcast.json"])
    assert dashboard == json.loads(COPIES["files/roomcast.json"].read_text())
    assert not [c for c in render().all("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
