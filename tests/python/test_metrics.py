"""/metrics after real traffic, through a standalone process and a small
cluster: the text parses as Prometheus exposition format, the counters moved by
exactly what the traffic should move them by, and every PromQL expression of
the shipped dashboard and alert rules parses and names only exported metrics."""

import json
import time
import urllib.error
import urllib.request

import grpc
import jwt
import promql_parser
import pytest
import socketio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kit import REPO, SECRET, TIMEOUT, NatsServer, Roomcast, mint_token, wait_for


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


def shipped_expressions():
    dashboard = json.loads((REPO / "deploy" / "grafana" / "roomcast.json").read_text())
    exprs = [(f"dashboard: {p['title']}", t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
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
        missing = {n for n in names if n not in exported}
        assert not missing, f"{where} uses metrics nothing exports: {sorted(missing)}"


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
