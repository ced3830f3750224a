"""Renders helm/roomcast with Helm's own Go code (PyPI helm-python-sdk binds the
Helm v4 SDK; no helm executable, no cluster) and reads what came out.

`render(values)` returns the manifests as dicts; `FEATURES` names the value sets
every test walks through, one per switch of the chart.
"""

import base64
import pathlib
import re
import tomllib

import helm_python as helm
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "roomcast"
RELEASE = "rc"
NAMESPACE = "realtime"
# The chart's kubeVersion floor, and the newest Kubernetes kubernetes-validate carries.
KUBE_VERSIONS = ("1.30.0", "1.37.0")

# A public key only (RS256 verifies with it), for the RS256 values.
RS256_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuUB+ALnqjwRcxXc/d0l1
rPEz92Lqng8uSpew+5vPIwXYN9/2a77YMNmgCufC4OrR1K72ZxeBF/4fDQEn6Noh
p+OoofFrgNdA5/32uVaMwDjUWk2wALeNb7Bs/dD6n2t4GthgXcrGwbpuJcAmkLnw
QCGOt44HkgqpXvft5YYtY27oVTlgnYeNSJIAG1CO1lT4kx2w9ZoY6eT0Yei4Xh+b
R1IHRNR+a4+jQUoT9NQJcqMv5TScIdPPbg8mfgFOeOI2i1Oin2Upsn0ok9DlWcsT
osBIzwBe8q7df3eazy3xZ9T2yYN66b0mazpZl+NUQBnJVqRsDkD3E9wJ8k6cZQlR
1QIDAQAB
-----END PUBLIC KEY-----
"""

EXTERNAL_NATS = {
    "internal": {"enabled": False},
    "external": {"urls": ["nats://nats-0.nats.messaging.svc:4222", "nats://nats-1.nats.messaging.svc:4222"]},
}

# One value set per switch of the chart; every test of the rendered output runs on each.
FEATURES = {
    "defaults": {},
    "hpa": {"edge": {"autoscaling": {"enabled": True, "connections": {"enabled": True, "averageValue": 2000}}}},
    "hpa-connections-only": {
        "edge": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None,
                                 "connections": {"enabled": True}}}
    },
    "servicemonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                   "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
                   "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Realtime"}}},
    "ingress": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "rt.example.com", "paths": []}],
            "tls": [{"hosts": ["rt.example.com"], "secretName": "rt-tls"}],
        }
    },
    "ingress-sticky": {
        "ingress": {"enabled": True, "className": "nginx", "stickySessions": {"enabled": True},
                    "hosts": [{"host": "rt.example.com", "paths": []}],
                    "tls": [{"hosts": ["rt.example.com"], "secretName": "rt-tls"}]}
    },
    "networkpolicy": {
        "networkPolicy": {
            "enabled": True,
            "grpcFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "backends"}}}],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        }
    },
    "internal-nats-single": {"nats": {"internal": {"replicas": 1}}},
    "internal-nats-userpassword": {"nats": {"auth": {"method": "userPassword"}}},
    "external-nats": {"nats": {**EXTERNAL_NATS, "auth": {"method": "none"}}},
    "external-nats-token": {"nats": {**EXTERNAL_NATS, "auth": {"method": "token"}}, "secrets": {"natsToken": "s3cret token!"}},
    "external-nats-creds": {
        "nats": {**EXTERNAL_NATS, "auth": {"method": "creds"}},
        "secrets": {"natsCreds": "-----BEGIN NATS USER JWT-----\neyJ0eXAi\n------END NATS USER JWT------\n"},
    },
    "existing-secret": {"secrets": {"existingSecret": "roomcast-credentials"}},
    "rs256": {"auth": {"jwt": {"algorithm": "RS256", "audience": "app", "issuer": "https://id.example.com/"}},
              "secrets": {"jwtPublicKey": RS256_PUBLIC_KEY}},
    "connect-hook": {"auth": {"jwt": {"enabled": False}, "connectHook": {"url": "http://auth.backends.svc:7000"}}},
    "presence-off": {"presence": {"enabled": False}},
    "open-api-anonymous": {"auth": {"allowAnonymous": True, "apiKeys": {"enabled": False}}},
    "tracing": {"tracing": {"otlpEndpoint": "http://otel-collector.observability:4317", "sampleRatio": 0.25},
                "edge": {"extraConfig": {"recovery_rooms": ["chat:*"]}}},
    # The default ratio (1, an integer in the settings file) and a float from extraConfig.
    "tracing-default-ratio": {"tracing": {"otlpEndpoint": "https://otel-collector.observability:4317"},
                              "control": {"extraConfig": {"trace_sample_ratio": 0.1}}},
    "extra-config": {"edge": {"extraConfig": {"jwt_leeway_secs": 5, "namespaces": ["/", "/chat"]}},
                     "control": {"extraConfig": {"request_timeout_ms": 7000}}},
}


class Rendered:
    """The manifests of one render, and its NOTES.txt."""

    def __init__(self, files):
        self.notes = ""
        self.docs = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("metadata", {})
                    self.docs.append(doc)

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind, name=None):
        """The one object of `kind` (named `name` when given); fails otherwise."""
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
        return found[0]

    def find(self, kind, name):
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        return found[0] if found else None

    def deployment(self, component):
        (found,) = [d for d in self.all("Deployment")
                    if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
        return found

    def container(self, component):
        (container,) = self.deployment(component)["spec"]["template"]["spec"]["containers"]
        return container

    def settings_text(self, role):
        (config,) = [d for d in self.all("ConfigMap") if f"{role}.toml" in d.get("data", {})]
        return config["data"][f"{role}.toml"]

    def settings(self, role):
        return tomllib.loads(self.settings_text(role))

    def secret_data(self):
        """The chart's Secret, decoded; None when an existing Secret is used."""
        secret = self.find("Secret", f"{RELEASE}-roomcast-secrets")
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def render(values=None, release=RELEASE):
    with helm.Chart.load(CHART) as chart:
        return Rendered(chart.render(values or {}, name=release, namespace=NAMESPACE))


def render_error(values):
    """The message Helm refuses `values` with (schema or template check)."""
    try:
        render(values)
    except helm.HelmError as e:
        return str(e)
    raise AssertionError(f"values were accepted: {values}")


def lint(values=None, kube_version=KUBE_VERSIONS[0]):
    return helm.lint(CHART, values or {}, strict=True, namespace=NAMESPACE, kube_version="v" + kube_version)


def resolve_env(container, secret, pod_name):
    """The environment the kubelet would give `container`: literal values,
    `metadata.name`, and keys of the Secret (`secret`: decoded data)."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", var
            env[var["name"]] = pod_name
        elif "secretKeyRef" in source:
            key = source["secretKeyRef"]["key"]
            assert key in secret, f"{var['name']} reads key {key!r}, which the Secret lacks ({sorted(secret)})"
            env[var["name"]] = secret[key]
        else:
            raise AssertionError(f"unexpected env source {var}")
    # $(VAR) references to earlier variables, expanded by the kubelet.
    for name, value in env.items():
        for other, replacement in env.items():
            value = value.replace(f"$({other})", replacement)
        env[name] = value
    return env


def documented_values():
    """[(path, comment)] of every value values.yaml documents with a `# --`
    comment (a value's subtree is documented by its comment), and the paths of
    leaf values that have no such comment above them or above an ancestor."""
    documented, undocumented = [], []
    stack = []  # (indent, path, documented)
    lines = (CHART / "values.yaml").read_text().splitlines()
    comment = None
    for n, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            comment = None
            continue
        if stripped.startswith("#"):
            comment = stripped[4:].strip() if stripped.startswith("# --") else comment
            continue
        indent = len(line) - len(line.lstrip())
        key = re.match(r"([A-Za-z][\w]*):(.*)$", stripped)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stripped.startswith("-") or not key:
            comment = None
            continue  # an item of a list default: part of its parent's value
        path = ".".join([p for _, p, _ in stack] + [key.group(1)])
        covered = any(d for _, _, d in stack)
        following = next((l for l in lines[n + 1:] if l.strip() and not l.strip().startswith("#")), "")
        leaf = key.group(2).strip() != "" or len(following) - len(following.lstrip()) <= indent
        if comment is not None and not covered:
            documented.append((path, comment))
        elif leaf and not covered:
            undocumented.append(path)
        stack.append((indent, key.group(1), comment is not None))
        comment = None
    return documented, undocumented
