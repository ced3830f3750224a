"""The real roomcast binary and nats-server run what the chart renders: the
Deployments' arguments and environment, the ConfigMap's settings files, the
Secret's values, and the NATS StatefulSet's nats.conf. Only listen addresses and
NATS URLs are replaced by loopback ones."""

import json
import signal
import subprocess
import time

import grpc
import jwt
import pytest
import socketio

from chartkit import FEATURES, NAMESPACE, RELEASE, render
from procs import BIN, NATS_BIN, NatsCluster, PlainNats, Pod, Roomcast, free_port, http_get, wait_for

LISTEN = {
    "edge": ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
    "control": ["--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
}
# Test values for the keys an existing Secret holds.
EXISTING_SECRET = {
    "jwt-secret": "a-test-secret-of-more-than-16-bytes",
    "api-keys": "test-key-1,test-key-2",
    "nats-token": "testtoken",
}


def secret_of(out):
    data = out.secret_data()
    return EXISTING_SECRET if data is None else data


def nats_flags(urls):
    return [flag for url in urls for flag in ("--nats-url", url)]


def start(out, role, urls, secret=None, pod_name=None):
    deployment = out.deployment(role)
    pod = Pod(out, deployment, secret or secret_of(out), pod_name or f"{deployment['metadata']['name']}-7d9f8-x2k4q")
    return Roomcast(pod, [*LISTEN[role], *nats_flags(urls)])


@pytest.mark.parametrize("role", ["edge", "control"])
@pytest.mark.parametrize("name", sorted(FEATURES))
def test_rendered_settings_are_accepted(name, role):
    """Every settings file and environment the chart renders passes the
    binary's checks (unknown keys, invalid values, missing files) and gets as
    far as connecting to NATS, here a port nothing listens on."""
    out = render(FEATURES[name])
    rc = start(out, role, [f"nats://127.0.0.1:{free_port()}"])
    code = rc.exit_code(timeout=20)
    stderr = rc.stderr_text()
    rc.stop()
    assert code == 2, f"exit {code}\n{stderr}"
    assert "cannot connect to nats" in stderr, stderr
    assert "invalid config file" not in stderr


def test_nats_configs_are_valid():
    """nats-server -t accepts the rendered nats.conf of every NATS setting, with
    the StatefulSet's environment (server name, advertised names, secrets)."""
    for values in ({}, FEATURES["internal-nats-single"], FEATURES["internal-nats-userpassword"],
                   FEATURES["presence-off"], {"nats": {"auth": {"method": "none"}}}):
        out = render(values)
        sts = out.get("StatefulSet")
        pod = Pod(out, sts, secret_of(out), f"{sts['metadata']['name']}-0")
        result = subprocess.run(
            [NATS_BIN, *pod.args(), "-t"], env={**pod.env, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=20,
        )
        assert result.returncode == 0, (values, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def cluster():
    """The default release: 3 NATS servers with JetStream and token auth, an
    edge and a control plane, all from one render."""
    out = render()
    secret = out.secret_data()
    nats = NatsCluster(out, secret)
    procs = []
    try:
        control = start(out, "control", nats.urls, secret)
        procs.append(control)
        edge = start(out, "edge", nats.urls, secret)
        procs.append(edge)
        control.wait_ready_line()
        edge.wait_ready_line()
        yield out, secret, nats, edge, control
    finally:
        for proc in procs:
            proc.proc.kill()  # the drain is test_edge_drain's business
            proc.proc.wait(timeout=10)
        nats.stop()


def test_processes_are_ready_and_probes_answer(cluster):
    out, _, _, edge, control = cluster
    for proc, role in ((edge, "edge"), (control, "control")):
        # The node id is the pod's name (ROOMCAST_NODE_ID from metadata.name).
        assert proc.addrs["node"] == f"{RELEASE}-roomcast-{role}-7d9f8-x2k4q"
        container = out.container(role)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert wait_for(lambda: proc.admin(path)[0] == 200, f"{role} {probe} {path}")


def test_metrics_the_chart_relies_on(cluster):
    out, _, _, edge, control = cluster
    _, text = edge.admin("/metrics")
    assert "\nroomcast_edge_connections " in "\n" + text, "the HPA's Pods metric"
    wait_for(lambda: "roomcast_control_live_edges 1" in control.admin("/metrics")[1],
             "the control plane to count the edge (same cluster name, same NATS)")
    # What the dashboard's Build, CPU, memory and file descriptor panels read, on every process.
    for proc, role in ((edge, "edge"), (control, "control")):
        text = "\n" + proc.admin("/metrics")[1]
        assert f'\nroomcast_build_info{{version="{out.get("Deployment", f"{RELEASE}-roomcast-{role}")["metadata"]["labels"]["app.kubernetes.io/version"]}",role="{role}"}} 1' in text
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                     "process_start_time_seconds"):
            assert f"\n{name} " in text, name


def test_client_token_and_api_key_from_the_secret(cluster):
    """A client with a JWT signed by the Secret's jwt-secret connects; the
    control plane takes the Secret's API key and refuses a call without it;
    presence lives in a 3-replica JetStream bucket of the chart's NATS."""
    out, secret, nats, edge, control = cluster
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "iat": now, "exp": now + 600}, secret["jwt-secret"], algorithm="HS256")
    client = socketio.Client(reconnection=False)
    client.connect(f"http://{edge.addrs['http']}", auth={"token": token}, transports=["websocket"],
                   socketio_path=out.settings("edge")["path"], wait_timeout=10)
    try:
        grpc = f"http://{control.addrs['grpc']}"
        refused = subprocess.run([BIN, "presence", "-u", "alice", "--server", grpc, "--json"],
                                 capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
        assert refused.returncode != 0 and "unauthenticated" in refused.stderr.lower(), refused.stderr
        api_key = secret["api-keys"].split(",")[0]

        def online():
            r = subprocess.run([BIN, "presence", "-u", "alice", "--server", grpc, "--api-key", api_key, "--json"],
                               capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
            assert r.returncode == 0, r.stderr
            return '"online"' in r.stdout

        wait_for(online, "alice online")
    finally:
        client.disconnect()

    bucket = f"KV_roomcast-presence-{out.settings('control')['cluster']}"
    _, body = http_get(nats.servers[0].monitor + "/jsz?accounts=true&streams=true&config=true")
    streams = [s for a in json.loads(body).get("account_details", []) for s in a.get("stream_detail", [])]
    (presence,) = [s for s in streams if s["name"] == bucket]
    assert presence["config"]["num_replicas"] == out.settings("control")["presence_replicas"] == 3


def test_edge_drain_follows_the_rendered_timings():
    """SIGTERM: the edge reports not ready at once, keeps serving clients for
    the drain delay, then exits well inside the pod's grace period."""
    values = {
        "nats": {"internal": {"enabled": False}, "external": {"urls": ["nats://nats:4222"]}, "auth": {"method": "none"}},
        "presence": {"enabled": False},
        "edge": {"drain": {"preStopSleepSeconds": 1, "delaySeconds": 1, "windowSeconds": 1}},
    }
    out = render(values)
    grace = out.deployment("edge")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = out.container("edge")["lifecycle"]["preStop"]["sleep"]["seconds"]
    nats = PlainNats()
    try:
        edge = start(out, "edge", [nats.client_url])
        edge.wait_ready_line()
        polling = f"http://{edge.addrs['http']}{out.settings('edge')['path']}?EIO=4&transport=polling"
        assert edge.admin("/readyz")[0] == 200 and http_get(polling)[0] == 200
        stopped = time.monotonic()
        edge.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: edge.admin("/readyz")[0] == 503, "not ready after SIGTERM", timeout=0.9)
        assert http_get(polling)[0] == 200, "clients are still served during the delay"
        code = edge.exit_code(timeout=grace - pre_stop)
        took = time.monotonic() - stopped
        assert code == 0, edge.stderr_text()
        assert 1 <= took < grace - pre_stop, took
    finally:
        nats.stop()


def hook(out, suffix):
    (pod,) = [p for p in out.all("Pod") if p["metadata"]["name"].endswith(suffix)
              and p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    return pod["spec"]["containers"][0]


def test_helm_test_hooks_pass_against_the_release(cluster):
    """The `helm test` pods' checks, run here against the real processes: the
    handshake script with the Service address swapped for the edge's, and the
    health check grpc-health-probe makes (the same request, from Python)."""
    out, _, _, edge, control = cluster
    script = hook(out, "-test-socketio")["command"][-1]
    service = f"{RELEASE}-roomcast-edge.{NAMESPACE}.svc.cluster.local:{out.get('Service', f'{RELEASE}-roomcast-edge')['spec']['ports'][0]['port']}"
    assert service in script
    result = subprocess.run(["sh", "-c", script.replace(service, edge.addrs["http"])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and 'handshake ok: 0{"sid":' in result.stdout, result.stdout + result.stderr
    # A wrong answer fails the hook: the same script against the admin port (404).
    result = subprocess.run(["sh", "-c", script.replace(service, edge.addrs["admin"])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0

    args = hook(out, "-test-grpc-health")["args"]
    service_name = next(a.split("=", 1)[1] for a in args if a.startswith("-service="))
    with grpc.insecure_channel(control.addrs["grpc"]) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda s: b"\x0a" + bytes([len(s)]) + s.encode(),
                                    response_deserializer=lambda b: b)
        # HealthCheckResponse{status: SERVING (1)}, without an API key.
        assert check(service_name, timeout=10) == b"\x08\x01"
