"""helm lint and helm template of helm/roomcast for each feature switch, and
what the rendered manifests must hold: valid against the Kubernetes API schemas,
locked-down pods, drain timings that fit, probes on the admin port, every Secret
reference backed by a key."""

import re

import kubernetes_validate
import pytest
import yaml

from chartkit import (
    CHART,
    FEATURES,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    lint,
    render,
    render_error,
)

ROOMCAST = ("edge", "control")
PROMETHEUS_CONFIG = yaml.safe_load((CHART.parents[1] / "deploy" / "prometheus" / "prometheus.yml").read_text())


@pytest.fixture(scope="module", params=sorted(FEATURES))
def feature(request):
    return request.param, render(FEATURES[request.param])


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_lint_passes_strict(name):
    for kube_version in KUBE_VERSIONS:
        report = lint(FEATURES[name], kube_version)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], (kube_version, problems, report["errors"])


def test_every_manifest_is_valid_for_kubernetes(feature):
    name, out = feature
    assert out.docs, "nothing rendered"
    for doc in out.docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD, checked by test_service_monitor
        for kube_version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, kube_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} invalid for {kube_version} at {path}: {e.message}")


def test_names_labels_and_namespaces(feature):
    _, out = feature
    for doc in out.docs:
        meta = doc["metadata"]
        assert len(meta["name"]) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), meta["name"]
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, (doc["kind"], meta["name"])
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"
        assert "namespace" not in meta, "the release namespace comes from helm --namespace"


@pytest.mark.parametrize("values, release", [
    ({}, "a-release-name-of-fifty-three-characters-0123456789ab"),
    ({"fullnameOverride": "f" * 46}, RELEASE),
    ({"nameOverride": "rt"}, "chat"),
])
def test_long_names_still_fit(values, release):
    out = render(values, release=release)
    for doc in out.docs:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
    # StatefulSet pods carry a controller-revision-hash label of "<name>-<10 characters>".
    assert len(out.get("StatefulSet")["metadata"]["name"]) + 11 <= 63


def pod_specs(out):
    for kind in ("Deployment", "StatefulSet"):
        for doc in out.all(kind):
            yield f"{kind}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def test_pods_are_locked_down(feature):
    _, out = feature
    specs = list(pod_specs(out))
    assert specs
    for where, spec in specs:
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 65532, where
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert c["resources"]["requests"]["memory"], where


def test_probes_are_on_the_admin_port_the_binary_listens_on(feature):
    _, out = feature
    for role in ROOMCAST:
        container = out.container(role)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # The process binds what the settings file says; the pod exposes and probes the same port.
        admin = out.settings(role)["admin_listen"]
        assert admin.endswith(f":{ports['admin']}"), (role, admin, ports)
        own = out.settings(role)["listen" if role == "edge" else "grpc_listen"]
        assert own.endswith(f":{ports['http' if role == 'edge' else 'grpc']}"), (role, own, ports)
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        service = out.get("Service", f"{RELEASE}-roomcast-{role}-admin")
        targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
        assert targets == {"admin": "admin"}, targets
        client = out.get("Service", f"{RELEASE}-roomcast-{role}")
        targets = {p["name"]: p["targetPort"] for p in client["spec"]["ports"]}
        assert "admin" not in targets and set(targets) <= set(ports), targets


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_admin_ports_stay_off_public_services(service_type):
    """/metrics and /readyz are never on a client Service, whatever its type:
    each component's admin port is on a ClusterIP Service of its own."""
    out = render({"edge": {"service": {"type": service_type}}, "control": {"service": {"type": service_type}}})
    for role in ROOMCAST:
        container_ports = {p["name"]: p["containerPort"] for p in out.container(role)["ports"]}
        selector = out.deployment(role)["spec"]["selector"]["matchLabels"]
        admin_port = container_ports["admin"]
        for svc in out.all("Service"):
            if svc["spec"].get("selector") != selector:
                continue
            names = {p["name"] for p in svc["spec"]["ports"]}
            numbers = {p["port"] for p in svc["spec"]["ports"]} | {p["targetPort"] for p in svc["spec"]["ports"]}
            if svc["metadata"]["name"].endswith("-admin"):
                assert svc["spec"]["type"] == "ClusterIP" and names == {"admin"}, svc
            else:
                assert "admin" not in names and admin_port not in numbers, svc["metadata"]["name"]
        admin = out.get("Service", f"{RELEASE}-roomcast-{role}-admin")
        assert admin["spec"]["selector"] == selector
        assert admin["spec"]["ports"][0]["port"] == admin_port
        client = out.get("Service", f"{RELEASE}-roomcast-{role}")
        assert client["spec"]["type"] == service_type


def test_roomcast_runs_its_role_with_the_mounted_settings(feature):
    _, out = feature
    for role in ROOMCAST:
        container = out.container(role)
        assert container["args"] == [role, "--config", f"/etc/roomcast/{role}.toml"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[f"/etc/roomcast/{role}.toml"]["subPath"] == f"{role}.toml"
        env = {v["name"]: v for v in container["env"]}
        assert env["ROOMCAST_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        # Secrets never sit in the settings file.
        settings = out.settings(role)
        assert not {"jwt_secret", "api_keys", "nats_token", "nats_password", "nats_nkey_seed"} & set(settings)


def test_every_secret_reference_is_backed(feature):
    name, out = feature
    data = out.secret_data()
    existing = FEATURES[name].get("secrets", {}).get("existingSecret")
    for where, spec in pod_specs(out):
        refs = [v["valueFrom"]["secretKeyRef"] for c in spec["containers"] for v in c.get("env", [])
                if "secretKeyRef" in v.get("valueFrom", {})]
        refs += [{"name": vol["secret"]["secretName"], "key": item["key"]}
                 for vol in spec.get("volumes", []) if "secret" in vol for item in vol["secret"].get("items", [])]
        for ref in refs:
            if existing:
                assert data is None and ref["name"] == existing, (where, ref)
            else:
                assert ref["name"] == f"{RELEASE}-roomcast-secrets" and ref["key"] in data, (where, ref, sorted(data))
    if data is not None:
        for key, value in data.items():
            assert value, f"empty secret value {key}"


def test_edge_drain_fits_in_the_grace_period(feature):
    _, out = feature
    spec = out.deployment("edge")["spec"]["template"]["spec"]
    container = out.container("edge")
    env = {v["name"]: v.get("value") for v in container["env"]}
    delay_ms, window_ms = int(env["ROOMCAST_DRAIN_DELAY_MS"]), int(env["ROOMCAST_DRAIN_WINDOW_MS"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The kubelet's clock starts with preStop; SIGTERM follows it, then the drain.
    assert spec["terminationGracePeriodSeconds"] > pre_stop + (delay_ms + window_ms) / 1000
    assert "drain_delay_ms" not in out.settings("edge"), "drain is set by environment only"
    control = out.deployment("control")["spec"]["template"]["spec"]
    assert control["terminationGracePeriodSeconds"] > out.container("control")["lifecycle"]["preStop"]["sleep"]["seconds"]


def test_drain_values_become_the_binary_variables():
    out = render({"edge": {"drain": {"preStopSleepSeconds": 3, "delaySeconds": 7, "windowSeconds": 40}}})
    container = out.container("edge")
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["ROOMCAST_DRAIN_DELAY_MS"] == "7000"
    assert env["ROOMCAST_DRAIN_WINDOW_MS"] == "40000"
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 3}}
    assert out.deployment("edge")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 3 + 7 + 40 + 15

    out = render({"edge": {"terminationGracePeriodSeconds": 120}})
    assert out.deployment("edge")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120

    message = render_error({"edge": {"terminationGracePeriodSeconds": 20}})
    assert "edge.terminationGracePeriodSeconds (20) must be longer than" in message and "(30)" in message


def test_rolling_update_and_disruption_budgets():
    out = render()
    edge = out.deployment("edge")["spec"]
    assert edge["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    assert edge["minReadySeconds"] > 0
    for component in ("edge", "control", "nats"):
        pdb = out.get("PodDisruptionBudget", f"{RELEASE}-roomcast-{component}")
        assert pdb["spec"]["maxUnavailable"] == 1
        owner = (out.get("StatefulSet") if component == "nats" else out.deployment(component))
        assert pdb["spec"]["selector"]["matchLabels"] == owner["spec"]["selector"]["matchLabels"]
    out = render({"edge": {"pdb": {"minAvailable": "50%"}}, "control": {"pdb": {"enabled": False}}})
    assert out.get("PodDisruptionBudget", f"{RELEASE}-roomcast-edge")["spec"] == {
        "minAvailable": "50%",
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": out.deployment("edge")["spec"]["selector"],
    }
    assert out.find("PodDisruptionBudget", f"{RELEASE}-roomcast-control") is None


def test_spread_and_anti_affinity_select_their_own_pods():
    out = render({"control": {"podAntiAffinity": "hard"}})
    for component in ROOMCAST:
        spec = out.deployment(component)["spec"]
        selector = spec["selector"]["matchLabels"]
        pod = spec["template"]["spec"]
        (tsc,) = pod["topologySpreadConstraints"]
        assert tsc["labelSelector"]["matchLabels"] == selector
        assert tsc["matchLabelKeys"] == ["pod-template-hash"]
        anti = pod["affinity"]["podAntiAffinity"]
        if component == "control":
            (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        else:
            term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert term["labelSelector"]["matchLabels"] == selector
        assert term["topologyKey"] == "kubernetes.io/hostname"
    out = render({"edge": {"podAntiAffinity": "none", "topologySpreadConstraints": []}})
    pod = out.deployment("edge")["spec"]["template"]["spec"]
    assert "affinity" not in pod and "topologySpreadConstraints" not in pod


def test_hpa_scales_edges_on_cpu_and_connections():
    out = render(FEATURES["hpa"])
    hpa = out.get("HorizontalPodAutoscaler")
    assert "replicas" not in out.deployment("edge")["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-roomcast-edge"}
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    # The gauge every edge exports (test_binary checks it is on /metrics).
    assert metrics["Pods"]["pods"]["metric"]["name"] == "roomcast_edge_connections"
    assert metrics["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "2000"}
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    only = render(FEATURES["hpa-connections-only"]).get("HorizontalPodAutoscaler")
    assert [m["type"] for m in only["spec"]["metrics"]] == ["Pods"]
    big = render({"edge": {"autoscaling": {"enabled": True, "connections": {"enabled": True, "averageValue": 2000000}}}})
    (pods,) = [m for m in big.get("HorizontalPodAutoscaler")["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods["pods"]["target"]["averageValue"] == "2000000", "no float formatting (2e+06) of large values"
    assert render().all("HorizontalPodAutoscaler") == []


def test_service_monitor():
    out = render(FEATURES["servicemonitor"])
    sm = out.get("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    spec = sm["spec"]
    assert set(spec) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+s", endpoint["interval"]) and re.fullmatch(r"\d+s", endpoint["scrapeTimeout"])
    # It selects exactly the edge and control Services that have an admin port.
    selector = spec["selector"]

    def selected(svc):
        labels = svc["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in selector["matchLabels"].items()):
            return False
        for expr in selector.get("matchExpressions", []):
            assert expr["operator"] == "In"
            if labels.get(expr["key"]) not in expr["values"]:
                return False
        return any(p["name"] == "admin" for p in svc["spec"]["ports"])

    chosen = sorted(s["metadata"]["name"] for s in out.all("Service") if selected(s))
    assert chosen == [f"{RELEASE}-roomcast-control-admin", f"{RELEASE}-roomcast-edge-admin", f"{RELEASE}-roomcast-nats-admin"]
    # The job label is the one deploy/prometheus/prometheus.yml uses, which the alerts and the dashboard name.
    jobs = sorted(s["metadata"]["labels"][spec["jobLabel"]] for s in out.all("Service") if selected(s))
    assert jobs == ["nats", "roomcast-control", "roomcast-edge"]
    jobs = sorted(job["job_name"] for job in PROMETHEUS_CONFIG["scrape_configs"])
    assert jobs == ["nats", "roomcast-control", "roomcast-edge"]


def test_nats_exporter_sidecar():
    """NATS's monitoring port serves JSON: the NATS project's exporter beside
    each server turns it into Prometheus text, JetStream included."""
    out = render()
    pod = out.get("StatefulSet")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    exporter = containers["exporter"]
    assert exporter["image"].startswith("natsio/prometheus-nats-exporter:")
    monitor = next(p["containerPort"] for p in containers["nats"]["ports"] if p["name"] == "monitor")
    assert exporter["args"][-1] == f"http://localhost:{monitor}"
    assert "-jsz=all" in exporter["args"] and "-varz" in exporter["args"]
    (port,) = exporter["ports"]
    svc = out.get("Service", f"{RELEASE}-roomcast-nats-admin")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "admin", "port": port["containerPort"], "targetPort": port["name"],
                                     "protocol": "TCP", "appProtocol": "http"}]
    off = render({"nats": {"internal": {"exporter": {"enabled": False}}}})
    assert [c["name"] for c in off.get("StatefulSet")["spec"]["template"]["spec"]["containers"]] == ["nats"]
    assert off.find("Service", f"{RELEASE}-roomcast-nats-admin") is None
    assert render().all("ServiceMonitor") == []


def test_ingress_needs_no_affinity_and_sticky_sessions_are_optional():
    plain = render(FEATURES["ingress"])
    ann = plain.get("Ingress")["metadata"]["annotations"]
    assert not any("affinity" in k or "session-cookie" in k for k in ann), ann
    assert "stickySessions" not in plain.notes
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) * 1000 > 25000

    sticky = render(FEATURES["ingress-sticky"])
    ing = sticky.get("Ingress")
    ann = ing["metadata"]["annotations"]
    assert "stickySessions is on" in sticky.notes
    assert ann["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert ann["nginx.ingress.kubernetes.io/affinity-mode"] == "persistent"
    assert ann["nginx.ingress.kubernetes.io/session-cookie-name"] == "roomcast-edge"
    assert ann["nginx.ingress.kubernetes.io/session-cookie-path"] == "/socket.io/"
    assert ann["nginx.ingress.kubernetes.io/session-cookie-secure"] == "true"
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) * 1000 > 25000
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    (rule,) = spec["rules"]
    assert rule["host"] == "rt.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/socket.io/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": f"{RELEASE}-roomcast-edge", "port": {"name": "http"}}

    custom = render({"ingress": {"enabled": True, "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "120"}}})
    assert custom.get("Ingress")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "120"
    assert render().all("Ingress") == []


def test_network_policies_admit_the_named_ports():
    out = render(FEATURES["networkpolicy"])
    policies = {p["metadata"]["name"]: p for p in out.all("NetworkPolicy")}
    assert sorted(policies) == sorted(f"{RELEASE}-roomcast-{c}" for c in ("edge", "control", "nats"))
    for component, owner in [("edge", out.deployment("edge")), ("control", out.deployment("control")),
                             ("nats", out.get("StatefulSet"))]:
        policy = policies[f"{RELEASE}-roomcast-{component}"]["spec"]
        assert policy["podSelector"]["matchLabels"] == owner["spec"]["selector"]["matchLabels"]
        assert policy["policyTypes"] == ["Ingress"]
        named = {p["name"] for c in owner["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for rule in policy["ingress"]:
            for port in rule["ports"]:
                assert port["port"] in named, (component, port)
    control = policies[f"{RELEASE}-roomcast-control"]["spec"]["ingress"]
    grpc = next(r for r in control if r["ports"][0]["port"] == "grpc")
    assert grpc["from"] == FEATURES["networkpolicy"]["networkPolicy"]["grpcFrom"]
    nats_clients = policies[f"{RELEASE}-roomcast-nats"]["spec"]["ingress"][0]["from"][0]["podSelector"]
    assert nats_clients["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["edge", "control"]}
    ]
    assert render().all("NetworkPolicy") == []


def test_internal_nats_cluster():
    out = render()
    sts = out.get("StatefulSet")
    name = f"{RELEASE}-roomcast-nats"
    headless = f"{name}-headless"
    assert sts["metadata"]["name"] == name and sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == headless
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    container = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "nats")
    assert container["image"] == "nats:2.12-alpine"
    assert container["args"] == ["--config", "/etc/nats/nats.conf"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/data", "/etc/nats"}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    svc = out.get("Service", headless)
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    conf = out.get("ConfigMap", name)["data"]["nats.conf"]
    routes = re.findall(r"nats://(\S+):6222", conf)
    assert routes == [f"{name}-{i}.{headless}.{NAMESPACE}.svc.cluster.local" for i in range(3)]
    assert "jetstream {" in conf and "store_dir: /data" in conf
    for role in ROOMCAST:
        settings = out.settings(role)
        assert settings["nats_urls"] == [f"nats://{r}:4222" for r in routes]
        assert settings["presence"] is True and settings["presence_replicas"] == 3
        assert settings["recovery_replicas"] == 3

    single = render(FEATURES["internal-nats-single"])
    assert single.get("StatefulSet")["spec"]["replicas"] == 1
    assert "cluster {" not in single.get("ConfigMap", name)["data"]["nats.conf"]
    assert single.settings("edge")["presence_replicas"] == 1
    assert single.settings("edge")["recovery_replicas"] == 1


def test_external_nats():
    out = render(FEATURES["external-nats"])
    assert out.all("StatefulSet") == [] and out.find("ConfigMap", f"{RELEASE}-roomcast-nats") is None
    for role in ROOMCAST:
        settings = out.settings(role)
        assert settings["nats_urls"] == FEATURES["external-nats"]["nats"]["external"]["urls"]
        assert settings["presence_replicas"] == 1 and settings["recovery_replicas"] == 1
        env = {v["name"] for v in out.container(role)["env"]}
        assert not any(n.startswith("ROOMCAST_NATS_") for n in env)
    out = render({**FEATURES["external-nats"], "presence": {"replicas": 3}})
    assert out.settings("control")["presence_replicas"] == 3
    assert out.settings("edge")["recovery_replicas"] == 3
    creds = render(FEATURES["external-nats-creds"])
    for role in ROOMCAST:
        assert creds.settings(role)["nats_creds_file"] == "/etc/roomcast/secrets/nats.creds"
        assert {m["mountPath"] for m in creds.container(role)["volumeMounts"]} >= {"/etc/roomcast/secrets"}


def test_existing_secret():
    out = render(FEATURES["existing-secret"])
    assert out.all("Secret") == []
    keys = {v["valueFrom"]["secretKeyRef"]["key"]
            for role in ROOMCAST for v in out.container(role)["env"] if "secretKeyRef" in v.get("valueFrom", {})}
    assert keys == {"jwt-secret", "api-keys", "nats-token"}
    assert "get secret" not in out.notes, "no generated values to read back"


def test_generated_secrets():
    data = render().secret_data()
    assert set(data) == {"jwt-secret", "api-keys", "nats-token"}
    for value in data.values():
        assert re.fullmatch(r"[A-Za-z]{40}", value)
    given = render({"secrets": {"jwtSecret": "a-secret-of-32-bytes-0123456789ab", "apiKeys": ["k1", "k2"],
                                "natsToken": "Tok3n"}}).secret_data()
    assert given == {"jwt-secret": "a-secret-of-32-bytes-0123456789ab", "api-keys": "k1,k2", "nats-token": "Tok3n"}


def test_settings_follow_the_values():
    out = render({
        "clusterName": "chat-eu",
        "socketio": {"path": "/rt/", "namespaces": ["/", "/admin"], "corsOrigins": ["https://app.example.com"],
                     "maxPayload": 2000000, "outboundQueueBytes": 8388608},
        "presence": {"graceMs": 30000, "audience": "room:lobby", "maxConnectionsPerUser": 5},
        "auth": {"jwt": {"audience": "app", "leewaySecs": 10}},
        "log": {"format": "plain", "filter": "debug"},
    })
    edge = out.settings("edge")
    assert edge["cluster"] == "chat-eu" and edge["path"] == "/rt/"
    assert edge["namespaces"] == ["/", "/admin"] and edge["cors_origins"] == ["https://app.example.com"]
    assert edge["max_payload"] == 2000000 and edge["outbound_queue_bytes"] == 8388608
    assert edge["presence_grace_ms"] == 30000 and edge["presence_audience"] == "room:lobby"
    assert edge["max_connections_per_user"] == 5
    assert edge["jwt_audience"] == "app" and edge["jwt_leeway_secs"] == 10 and "jwt_issuer" not in edge
    assert edge["log_format"] == "plain" and edge["log"] == "debug"
    control = out.settings("control")
    assert control["cluster"] == "chat-eu" and control["presence_grace_ms"] == 30000
    assert not {k for k in control if k.startswith("jwt_") or k in ("listen", "path", "allow_anonymous")}
    extra = render(FEATURES["extra-config"])
    assert extra.settings("edge")["jwt_leeway_secs"] == 5 and extra.settings("edge")["namespaces"] == ["/", "/chat"]
    assert extra.settings("control")["request_timeout_ms"] == 7000


def test_config_changes_roll_the_pods():
    a = render()
    b = render({"socketio": {"pingIntervalMs": 20000}})
    for role in ROOMCAST:
        ann_a = a.deployment(role)["spec"]["template"]["metadata"]["annotations"]
        ann_b = b.deployment(role)["spec"]["template"]["metadata"]["annotations"]
        assert ann_a["checksum/config"] != ann_b["checksum/config"]
        assert ann_a["checksum/config"] == render().deployment(role)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


@pytest.mark.parametrize("values, message", [
    ({"nats": {"internal": {"enabled": False}}},
     "nats: set nats.external.urls to the servers of an existing NATS, or nats.internal.enabled=true"),
    ({"nats": {"external": {"urls": ["nats://n:4222"]}}},
     "nats.external.urls and nats.internal.enabled=true exclude each other"),
    ({"nats": {"auth": {"method": "creds"}}, "secrets": {"natsCreds": "x"}},
     "nats.auth.method=creds needs accounts on the NATS servers"),
    ({"auth": {"jwt": {"enabled": False}}},
     "auth: clients could not authenticate"),
    ({"auth": {"connectHook": {"url": "http://hook:7000"}}},
     "with auth.connectHook.url the hook decides every connect"),
    ({"auth": {"jwt": {"algorithm": "RS256"}}},
     "auth.jwt.algorithm=RS256 needs secrets.jwtPublicKey"),
    ({"nats": {"internal": {"enabled": False}, "external": {"urls": ["nats://n:4222"]}}},
     "nats.auth.method=token with an external NATS needs secrets.natsToken"),
    ({"presence": {"replicas": 5}},
     "presence.replicas (5) cannot exceed nats.internal.replicas (3)"),
    ({"edgeTtlMs": 1500},
     "edgeTtlMs (1500) must be at least twice heartbeatIntervalMs (1000)"),
    ({"socketio": {"maxPayload": 10000000}},
     "socketio.outboundQueueBytes (4194304) must be at least socketio.maxPayload (10000000)"),
    ({"edge": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}},
     "edge.autoscaling.minReplicas (5) cannot exceed edge.autoscaling.maxReplicas (3)"),
    ({"edge": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
     "edge.autoscaling needs a metric"),
    ({"secrets": {"natsToken": "has spaces"}},
     "secrets.natsToken: with the chart's NATS use letters, digits and '_'"),
    ({"secrets": {"natsPassword": "true"}, "nats": {"auth": {"method": "userPassword"}}},
     "secrets.natsPassword: with the chart's NATS use letters"),
])
def test_inconsistent_values_are_refused(values, message):
    assert message in render_error(values)


def test_tracing_values_and_float_settings():
    out = render(FEATURES["tracing"])
    for role in ROOMCAST:
        settings = out.settings(role)
        assert settings["otlp_endpoint"] == "http://otel-collector.observability:4317"
        assert settings["trace_sample_ratio"] == 0.25
    # A float in extraConfig is kept a float (the schema accepts numbers).
    out = render({"edge": {"extraConfig": {"trace_sample_ratio": 0.1}}})
    assert out.settings("edge")["trace_sample_ratio"] == 0.1
    for role in ROOMCAST:
        assert "otlp_endpoint" not in render().settings(role)
    assert "/tracing/otlpEndpoint" in render_error({"tracing": {"otlpEndpoint": "collector:4317"}})
    assert "/tracing/sampleRatio" in render_error({"tracing": {"sampleRatio": 1.5}})


def test_helm_test_hooks_reach_the_services():
    """`helm test` runs two pods: an Engine.IO handshake through the edges'
    Service and a gRPC health check through the control planes' (test_binary
    runs both against real processes)."""
    out = render()
    hooks = {p["metadata"]["name"]: p for p in out.all("Pod")
             if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"}
    assert sorted(hooks) == [f"{RELEASE}-roomcast-test-grpc-health", f"{RELEASE}-roomcast-test-socketio"]
    for pod in hooks.values():
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"]["memory"]
    edge = out.get("Service", f"{RELEASE}-roomcast-edge")
    edge_port = next(p["port"] for p in edge["spec"]["ports"] if p["name"] == "http")
    script = hooks[f"{RELEASE}-roomcast-test-socketio"]["spec"]["containers"][0]["command"][-1]
    assert f"http://{RELEASE}-roomcast-edge.{NAMESPACE}.svc.cluster.local:{edge_port}/socket.io/?EIO=4&transport=polling" in script
    control = out.get("Service", f"{RELEASE}-roomcast-control")
    grpc_port = next(p["port"] for p in control["spec"]["ports"] if p["name"] == "grpc")
    args = hooks[f"{RELEASE}-roomcast-test-grpc-health"]["spec"]["containers"][0]["args"]
    assert f"-addr={RELEASE}-roomcast-control.{NAMESPACE}.svc.cluster.local:{grpc_port}" in args
    assert "-service=roomcast.v1.Roomcast" in args
    moved = render({"socketio": {"path": "/rt/"}, "edge": {"ports": {"http": 8080}}})
    (pod,) = [p for p in moved.all("Pod") if p["metadata"]["name"].endswith("-test-socketio")]
    assert f"svc.cluster.local:8080/rt/?EIO=4" in pod["spec"]["containers"][0]["command"][-1]
