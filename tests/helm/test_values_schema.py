"""values.schema.json refuses values the chart cannot use, and Helm's message
names the value and what is wrong with it."""

import json

import pytest

import yaml

from chartkit import CHART, documented_values, lint, render_error

PREFIX = "values don't meet the specifications of the schema(s)"


@pytest.mark.parametrize("values, where, why", [
    ({"edge": {"replicas": -1}}, "/edge/replicas", "minimum: got -1, want 0"),
    ({"control": {"replicas": 1.5}}, "/control/replicas", "got number, want"),
    ({"edge": {"replicas": "3"}}, "/edge/replicas", "got string, want"),
    ({"replicaCount": 3}, "at ''", "additional properties 'replicaCount' not allowed"),
    ({"edge": {"drain": {"delaySecs": 5}}}, "/edge/drain", "additional properties 'delaySecs' not allowed"),
    ({"log": {"format": "xml"}}, "/log/format", "value must be one of 'json', 'plain'"),
    ({"auth": {"jwt": {"algorithm": "none"}}}, "/auth/jwt/algorithm", "value must be one of 'HS256', 'RS256'"),
    ({"nats": {"auth": {"method": "password"}}}, "/nats/auth/method", "value must be one of"),
    ({"nats": {"internal": {"replicas": 2}}}, "/nats/internal/replicas", "value must be one of 1, 3, 5"),
    ({"edge": {"podAntiAffinity": "strict"}}, "/edge/podAntiAffinity", "value must be one of 'soft', 'hard', 'none'"),
    ({"edge": {"service": {"type": "ExternalName"}}}, "/edge/service/type", "value must be one of"),
    ({"edge": {"ports": {"admin": 70000}}}, "/edge/ports/admin", "maximum: got 70,000, want 65,535"),
    ({"control": {"ports": {"grpc": 0}}}, "/control/ports/grpc", "minimum: got 0, want 1"),
    ({"edge": {"drain": {"windowSeconds": -5}}}, "/edge/drain/windowSeconds", "minimum: got -5, want 0"),
    ({"presence": {"leaseTtlMs": 100}}, "/presence/leaseTtlMs", "minimum: got 100, want 300"),
    ({"presence": {"audience": "everyone"}}, "/presence/audience", "does not match pattern"),
    ({"socketio": {"path": "socket.io"}}, "/socketio/path", "does not match pattern"),
    ({"socketio": {"namespaces": []}}, "/socketio/namespaces", "minItems: got 0, want 1"),
    ({"clusterName": "my cluster"}, "/clusterName", "does not match pattern"),
    ({"secrets": {"jwtSecret": "too-short"}}, "/secrets/jwtSecret", "does not match pattern"),
    ({"secrets": {"apiKeys": ["a,b"]}}, "/secrets/apiKeys/0", "does not match pattern"),
    ({"nats": {"external": {"urls": ["http://nats:4222"]}}}, "/nats/external/urls/0", "does not match pattern"),
    ({"edge": {"updateStrategy": {"rollingUpdate": {"maxSurge": "lots"}}}},
     "/edge/updateStrategy/rollingUpdate/maxSurge", "oneOf"),
    ({"edge": {"extraConfig": {"Bad-Key": 1}}}, "/edge/extraConfig", "additional properties 'Bad-Key' not allowed"),
    ({"edge": {"extraConfig": {"nested": {"a": 1}}}}, "/edge/extraConfig/nested", "got object, want"),
    ({"serviceMonitor": {"interval": "often"}}, "/serviceMonitor/interval", "does not match pattern"),
])
def test_invalid_values_are_refused_with_a_clear_message(values, where, why):
    message = render_error(values)
    assert PREFIX in message, message
    assert where in message and why in message, message


def test_lint_reports_schema_errors():
    report = lint({"edge": {"replicas": -1}})
    assert any("'/edge/replicas': minimum: got -1, want 0" in e for e in report["errors"]), report


def test_schema_closes_every_object_it_describes():
    """Each object of the schema with listed properties refuses others; the
    free-form ones (annotations, resources, affinity, ...) list none."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path or "/")
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}/{i}")

    walk(schema, "")
    assert open_objects == []


def test_every_value_is_documented():
    documented, undocumented = documented_values()
    assert undocumented == [], "values.yaml: add a `# --` comment above these"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])
    readme = (CHART / "README.md").read_text()
    missing = [path for path, _ in documented if f"| `{path}` |" not in readme]
    assert missing == [], "helm/roomcast/README.md: add these to the values table"
