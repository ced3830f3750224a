"""examples/nats-backend/backend.py against a real nats-server and roomcast
edge: a python-socketio client's event reaches the example through NATS, and
the example's NATS reply arrives as the client's ack."""

import subprocess
import sys
import threading

import pytest
import socketio

from kit import REPO, SECRET, Roomcast, NatsServer, mint_token, wait_for

EXAMPLE = REPO / "examples" / "nats-backend" / "backend.py"


@pytest.fixture(scope="module")
def cluster():
    nats = NatsServer()
    edge = Roomcast("edge", "--nats-url", nats.url, "--jwt-secret", SECRET)
    yield nats, edge
    assert edge.stop() == 0, "SIGTERM should exit cleanly"
    nats.stop()


@pytest.fixture
def backend(cluster):
    nats, _ = cluster
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--nats", nats.url, "--event", "chat"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    threading.Thread(target=lambda: [lines.append(l) for l in proc.stdout], daemon=True).start()
    wait_for(lambda: any("listening on" in l for l in lines), "the example backend to subscribe", timeout=20)
    yield lines
    proc.terminate()
    proc.wait(timeout=10)


def test_the_example_backend_answers_a_clients_ack_over_nats(cluster, backend):
    _, edge = cluster
    client = socketio.Client(reconnection=False)
    client.connect(edge.http_url, auth={"token": mint_token("dora")}, transports=["websocket"], wait_timeout=5)
    try:
        answer = client.call("chat", {"text": "hi there"}, timeout=5)
    finally:
        client.disconnect()
    assert answer == ("received", {"text": "hi there", "from": "dora"})
    wait_for(lambda: any("dora" in l and "sent chat" in l for l in backend), "the backend to log the event")
