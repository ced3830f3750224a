"""/metrics after real traffic, through a standalone process and a small
cluster: the text parses as Prometheus exposition format, the counters moved by
exactly what the traffic should move them by, every PromQL expression of the
shipped dashboard and alert rules parses and names only exported metrics, and
a real Prometheus (Debian's) scraping the cluster answers every panel's query."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import jwt
import promql_parser
import pytest
import socketio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kit import REPO, SECRET, TIMEOUT, NatsServer, Roomcast, mint_token, terminate, wait_for


def scrape(proc):
    """(name, labels) → value for every sample of a process's /metrics."""
    with urllib.request.urlopen(f"http://{proc.addrs['admin']}/metrics", timeout=TIMEOUT) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class Clients:
    """python-socketio clients that count the events they receive."""

    def __init__(self):
        self.all = []

    def connect(self, url, sub, token=None):
        client = socketio.Client(reconnection=False)
        client.got = []
        client.on("*", lambda event, *args: client.got.append(event))
        client.connect(url, auth={"token": token or mint_token(sub)}, transports=["websocket"], wait_timeout=TIMEOUT)
        self.all.append(client)
        return client

    def close(self):
        for c in self.all:
            if c.connected:
                c.disconnect()


def emit_to_room(pb, grpc_addr, clients, room, n):
    messages, stubs = pb
    with grpc.insecure_channel(grpc_addr) as channel:
        api = stubs.RoomcastStub(channel)
        api.JoinRooms(
            messages.RoomsRequest(
                target=messages.Selector(socket_ids=[c.get_sid("/") for c in clients]), rooms=[room]
            ),
            timeout=TIMEOUT,
        )
        for i in range(n):
            api.Emit(messages.EmitRequest(to=messages.Selector(rooms=[room]), event="tick", args_json=f"[{i}]"), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as bad:
            api.Emit(messages.EmitRequest(event="tick", args_json="[oops"), timeout=TIMEOUT)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    wait_for(lambda: all(c.got.count("tick") == n for c in clients), f"every client to get {n} ticks")


def test_standalone_counters_move_by_the_traffic(pb):
    server = Roomcast("standalone", "--jwt-secret", SECRET, "--presence-grace-ms", "0")
    clients = Clients()
    try:
        members = [clients.connect(server.http_url, f"m{i}") for i in range(3)]
        emit_to_room(pb, server.grpc_addr, members, "metrics-room", 4)
        forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "another-secret-of-enough-length-0123456789", algorithm="HS256")
        with pytest.raises(socketio.exceptions.ConnectionError):
            clients.connect(server.http_url, "x", token=forged)
        members[0].disconnect()
        wait_for(lambda: value(scrape(server), "roomcast_presence_transitions_total", status="offline") == 1,
                 "the first member's offline transition")
        m = scrape(server)
        assert value(m, "roomcast_edge_deliveries_total") == 3 * 4
        assert value(m, "roomcast_edge_bus_messages_total", op="emit") == 4
        assert value(m, "roomcast_edge_sockets_connected_total", namespace="/") == 3
        assert value(m, "roomcast_grpc_requests_total", method="Emit", code="OK") == 4
        assert value(m, "roomcast_grpc_requests_total", method="Emit", code="INVALID_ARGUMENT") == 1
        assert value(m, "roomcast_grpc_requests_total", method="JoinRooms", code="OK") == 1
        assert value(m, "roomcast_grpc_request_duration_seconds_count", method="Emit") == 5
        assert value(m, "roomcast_edge_connects_refused_total", cause="bad_signature") == 1
        assert value(m, "roomcast_edge_disconnects_total", reason="transport_close") >= 1
        assert value(m, "roomcast_presence_transitions_total", status="online") == 3
        assert value(m, "roomcast_edge_connections") == 2
        assert value(m, "roomcast_edge_sockets", namespace="/") == 2
        assert value(m, "roomcast_fanout_latency_seconds_count") == 4
        assert value(m, "roomcast_edge_bytes_out_total") > 0
        assert value(m, "roomcast_edge_bytes_in_total") > 0
        assert value(m, "roomcast_ready") == 1
    finally:
        clients.close()
        assert server.stop() == 0


@pytest.fixture(scope="module")
def cluster(pb):
    """nats-server, two edges and a control plane that carried some traffic."""
    nats = NatsServer()
    common = ["--nats-url", nats.url, "--presence-grace-ms", "0"]
    edges = [Roomcast("edge", *common, "--jwt-secret", SECRET, "--node-id", f"metrics-e{i}") for i in (1, 2)]
    control = Roomcast("control", *common)
    clients = Clients()
    yield nats, edges, control, clients
    clients.close()
    for proc in [*edges, control]:
        assert proc.stop() == 0
    nats.stop()


def test_cluster_counters_move_by_the_traffic_on_each_edge(pb, cluster):
    _, (a, b), control, clients = cluster
    members = [clients.connect(a.http_url, "ca1"), clients.connect(a.http_url, "ca2"), clients.connect(b.http_url, "cb1")]
    emit_to_room(pb, control.grpc_addr, members, "cluster-metrics-room", 5)
    ma, mb, mc = scrape(a), scrape(b), scrape(control)
    assert value(ma, "roomcast_edge_deliveries_total") == 2 * 5
    assert value(mb, "roomcast_edge_deliveries_total") == 1 * 5
    assert value(ma, "roomcast_edge_room_subscriptions") == 1
    assert value(mc, "roomcast_grpc_requests_total", method="Emit", code="OK") == 5
    assert value(mc, "roomcast_control_live_edges") == 2
    for m in (ma, mb, mc):
        assert value(m, "roomcast_nats_connected") == 1
        assert value(m, "roomcast_ready") == 1


def promql_names(node, out):
    """Every metric name a parsed PromQL expression selects."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        out.add(node.name)
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector", "vs"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            promql_names(child, out)
    for child in getattr(node, "args", None) or []:
        promql_names(child, out)
    return out


# What the dashboard's template variables stand for when every value is
# chosen, and a rate window that fits a 1 s scrape interval.
DASHBOARD_VARIABLES = {"$__rate_interval": "5s", "$namespace": ".*", "$job": ".*", "$instance": ".*"}
# Series that come from elsewhere: Prometheus's own `up`, and NATS's exporter
# (prometheus-nats-exporter -jsz=all), which the alerts on JetStream replicas read.
NOT_FROM_ROOMCAST = {"up", "jetstream_stream_last_seq"}


def substitute(expr):
    for name in sorted(DASHBOARD_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, DASHBOARD_VARIABLES[name])
    assert "$" not in expr, f"a template variable the test does not know: {expr}"
    return expr


def dashboard():
    return json.loads((REPO / "deploy" / "grafana" / "roomcast.json").read_text())


def dashboard_expressions():
    return [(f"dashboard: {p['title']}", substitute(t["expr"])) for p in dashboard()["panels"] for t in p["targets"]]


def shipped_expressions():
    exprs = dashboard_expressions()
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    exprs += [(f"alert: {r['alert']}", r["expr"]) for g in alerts["groups"] for r in g["rules"]]
    return exprs


def test_dashboard_and_alerts_use_only_exported_metrics(pb, cluster):
    _, edges, control, clients = cluster
    if not clients.all:
        # Run alone: make the histograms appear.
        members = [clients.connect(edges[0].http_url, "solo")]
        emit_to_room(pb, control.grpc_addr, members, "solo-room", 1)
    exported = set()
    for proc in [*edges, control]:
        exported |= {name for name, _ in scrape(proc)}
    exprs = shipped_expressions()
    assert len(exprs) > 20
    for where, expr in exprs:
        names = promql_names(promql_parser.parse(expr), set())
        assert names, f"{where}: selects no metric: {expr}"
        missing = {n for n in names if n not in exported | NOT_FROM_ROOMCAST}
        assert not missing, f"{where} uses metrics nothing exports: {sorted(missing)}"


def test_dashboard_has_variables_and_a_panel_for_every_family(pb, cluster):
    """Releases are told apart by namespace, job and instance; every family
    the processes export is on some panel; no fixed rate window."""
    _, edges, control, clients = cluster
    if not clients.all:
        emit_to_room(pb, control.grpc_addr, [clients.connect(edges[0].http_url, "solo")], "solo-room", 1)
    board = dashboard()
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "job", "instance"} <= variables
    raw = [t["expr"] for p in board["panels"] for t in p["targets"]]
    for expr in raw:
        assert "[1m]" not in expr and "[5m]" not in expr, f"use $__rate_interval: {expr}"
        if "{" in expr:
            assert 'instance=~"$instance"' in expr and 'job=~"$job"' in expr and 'namespace=~"$namespace"' in expr, expr
    used = set()
    for _, expr in dashboard_expressions():
        used |= promql_names(promql_parser.parse(expr), set())
    families = {}
    for proc in [*edges, control]:
        with urllib.request.urlopen(f"http://{proc.addrs['admin']}/metrics", timeout=TIMEOUT) as r:
            for family in text_string_to_metric_families(r.read().decode()):
                families.setdefault(family.name, set()).update(s.name for s in family.samples)
    uncovered = sorted(f for f, samples in families.items() if not samples & used)
    assert uncovered == [], "dashboard: add panels for these families"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Debian's prometheus on a loopback port, scraping `jobs` every second,
    with a storage folder of its own."""

    def __init__(self, jobs):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: apt-get install prometheus (scripts/test installs it when run as root)")
        self.dir = tempfile.TemporaryDirectory()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                               for job, targets in jobs.items()],
        }
        path = os.path.join(self.dir.name, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(os.path.join(self.dir.name, "prometheus.log"), "w+b")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={self.dir.name}/data",
             f"--web.listen-address={self.url[len('http://'):]}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 503:
                return None  # still starting
            return json.loads(e.read())  # 400/422: an invalid query, with Prometheus's message
        except OSError:
            assert self.proc.poll() is None, f"prometheus exited: {self.log_text()}"
            return None

    def log_text(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self):
        terminate(self.proc)
        self.log.close()
        self.dir.cleanup()


def test_every_panel_query_runs_on_a_real_prometheus(pb, cluster):
    _, edges, control, clients = cluster
    # Traffic, so that the histograms and labelled counters have series.
    members = [clients.connect(edges[0].http_url, "prom1"), clients.connect(edges[1].http_url, "prom2")]
    emit_to_room(pb, control.grpc_addr, members, "prometheus-room", 2)
    prom = Prometheus({"roomcast-edge": [e.addrs["admin"] for e in edges], "roomcast-control": [control.addrs["admin"]]})
    try:
        def targets_up():
            answer = prom.api("targets")
            active = (answer or {}).get("data", {}).get("activeTargets", [])
            return len(active) == 3 and all(t["health"] == "up" for t in active)

        wait_for(targets_up, "prometheus to scrape the three processes", timeout=30)
        exported = {"roomcast_fanout_latency_seconds_bucket", "roomcast_grpc_request_duration_seconds_bucket",
                    "roomcast_build_info", "process_cpu_seconds_total"}

        def names():
            answer = prom.api("label/__name__/values") or {}
            found = set(answer.get("data") or [])
            return found if exported <= found else None

        scraped = wait_for(names, "the scraped series names", timeout=20)
        # A second scrape of every target, so that rate() has two samples.
        wait_for(
            lambda: (prom.api("query", query="min(count_over_time(up[10s])) >= 2") or {}).get("data", {}).get("result"),
            "two scrapes of every target", timeout=20)
        assert "roomcast_build_info" in scraped, "the template variables read roomcast_build_info"
        queries = dashboard_expressions()
        assert len(queries) >= 30
        answered = 0
        for where, expr in queries:
            answer = prom.api("query", query=expr)
            assert answer and answer["status"] == "success", f"{where}: {expr}: {answer}"
            missing = promql_names(promql_parser.parse(expr), set()) - scraped
            assert not missing, f"{where} names metrics the cluster does not export: {sorted(missing)}"
            answered += bool(answer["data"]["result"])
        # Most panels show data right away (the rest need a slow consumer, a recovery, ...).
        assert answered >= len(queries) // 2, f"only {answered} of {len(queries)} queries returned series"
    finally:
        prom.stop()


def readyz(proc):
    try:
        with urllib.request.urlopen(f"http://{proc.addrs['admin']}/readyz", timeout=TIMEOUT) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_readyz_follows_the_nats_connection():
    nats = NatsServer()
    edge = Roomcast("edge", "--nats-url", nats.url, "--allow-anonymous")
    control = Roomcast("control", "--nats-url", nats.url)
    client = socketio.Client(reconnection=False)
    try:
        client.connect(edge.http_url, transports=["websocket"], wait_timeout=TIMEOUT)
        nats.kill()
        for proc in (edge, control):
            wait_for(lambda p=proc: readyz(p) == 503, "not ready without NATS")
            assert value(scrape(proc), "roomcast_nats_connected") == 0
        assert client.connected, "the edge keeps its clients while NATS is away"
        nats.restart()
        for proc in (edge, control):
            wait_for(lambda p=proc: readyz(p) == 200, "ready again once NATS is back", timeout=20)
            m = scrape(proc)
            assert value(m, "roomcast_nats_connected") == 1
            assert value(m, "roomcast_nats_reconnects_total") >= 1
    finally:
        client.disconnect()
        for proc in (edge, control):
            assert proc.stop() == 0
        nats.stop()
