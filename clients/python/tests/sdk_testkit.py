"""The SDK tests' kit: a real `roomcast standalone`, or a cluster of
nats-server + two edges + a control plane, started on loopback with the
processes of tests/python/kit.py; clients are python-socketio's."""

import asyncio
import itertools
import pathlib
import queue
import sys
import urllib.parse
import urllib.request
from unittest import mock

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))
sys.path.insert(0, str(HERE.parent / "src"))

import kit  # noqa: E402
import socketio  # noqa: E402

API_KEY = "py-sdk-test-key"
NAMESPACES = ["--namespace", "/", "--namespace", "/admin"]
TIMEOUT = 5  # seconds, for every single wait


def wait_ready(proc):
    def ready():
        try:
            with urllib.request.urlopen(f"http://{proc.addrs['admin']}/readyz", timeout=1) as res:
                return res.status == 200
        except OSError:
            return False

    kit.wait_for(ready, f"{proc.addrs.get('node', 'roomcast')} /readyz", timeout=20)
    return proc


class Standalone:
    kind = "standalone"

    def __init__(self):
        self.proc = wait_ready(kit.Standalone("--jwt-secret", kit.SECRET, "--api-key", API_KEY, *NAMESPACES))
        self.http_urls = [self.proc.http_url]
        self.grpc_addr = self.proc.grpc_addr

    def stop(self):
        self.proc.stop()


class Cluster:
    """nats-server, edges `edge-1`, `edge-2` and control plane `control-1`."""

    kind = "cluster"

    def __init__(self, edges=2):
        self.nats = kit.NatsServer()
        self.edges = []
        self.control = None
        try:
            for i in range(edges):
                self.edges.append(
                    wait_ready(
                        kit.Roomcast(
                            "edge",
                            "--nats-url", self.nats.url,
                            "--node-id", f"edge-{i + 1}",
                            "--jwt-secret", kit.SECRET,
                            *NAMESPACES,
                        )
                    )
                )
            self.control = self._start_control("127.0.0.1:0")
        except BaseException:
            self.stop()
            raise
        self.http_urls = [edge.http_url for edge in self.edges]
        self.grpc_addr = self.control.grpc_addr

    def _start_control(self, grpc_listen):
        flags = {"control": ["--grpc-listen", grpc_listen]}
        with mock.patch.dict(kit.LISTEN_FLAGS, flags):
            return wait_ready(
                kit.Roomcast("control", "--nats-url", self.nats.url, "--node-id", "control-1", "--api-key", API_KEY)
            )

    def restart_control(self):
        """Stops the control plane (its streams end with UNAVAILABLE) and starts
        it again on the same gRPC address."""
        assert self.control.stop() == 0
        self.control = self._start_control(self.grpc_addr)

    def stop(self):
        for proc in [self.control, *self.edges]:
            if proc is not None:
                proc.stop()
        self.nats.stop()


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def target(request):
    t = Standalone() if request.param == "standalone" else Cluster()
    yield t
    t.stop()


class Client:
    """A python-socketio client (threads) driven from asyncio tests."""

    _counter = itertools.count()

    def __init__(self, url, sub=None, *, auth=None, query=None, headers=None, handlers=None, namespace="/"):
        self.namespace = namespace
        self.url = url + ("?" + urllib.parse.urlencode(query) if query else "")
        self.sub = sub or f"user-{next(self._counter)}"
        self.auth = {"token": kit.mint_token(self.sub), **(auth or {})}
        self.headers = headers or {}
        self.sio = socketio.Client(reconnection=False)
        self.received = queue.Queue()
        self.disconnected = queue.Queue()
        self.sio.on("*", lambda event, *args: self.received.put((event, list(args))), namespace=namespace)
        self.sio.on("disconnect", lambda *reason: self.disconnected.put(reason), namespace=namespace)
        for event, handler in (handlers or {}).items():
            self.sio.on(event, handler, namespace=namespace)

    @property
    def sid(self):
        return self.sio.get_sid(self.namespace)

    async def connect(self):
        await asyncio.to_thread(
            self.sio.connect,
            self.url,
            auth=self.auth,
            headers=self.headers,
            namespaces=[self.namespace],
            transports=["websocket"],
            wait_timeout=TIMEOUT,
        )
        return self

    async def next_event(self, timeout=TIMEOUT):
        try:
            return await asyncio.to_thread(self.received.get, timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.sub}: no event within {timeout}s") from None

    async def nothing(self, within=0.5):
        """Asserts that no event arrives within `within` seconds."""
        try:
            event = await asyncio.to_thread(self.received.get, timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"{self.sub}: unexpected {event}")

    async def wait_disconnect(self, timeout=TIMEOUT):
        try:
            return await asyncio.to_thread(self.disconnected.get, timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.sub}: not disconnected within {timeout}s") from None

    async def call(self, event, data, timeout=TIMEOUT):
        return await asyncio.to_thread(self.sio.call, event, data, namespace=self.namespace, timeout=timeout)

    async def disconnect(self):
        await asyncio.to_thread(self.sio.disconnect)


@pytest.fixture
def clients(target):
    """clients(n, **kw) → n connected Clients, spread over the edges; all
    disconnected at the end."""
    made = []
    edges = itertools.cycle(target.http_urls)

    async def _make(n=1, **kwargs):
        batch = [Client(next(edges), **kwargs) for _ in range(n)]
        made.extend(batch)
        for client in batch:
            await client.connect()
        return batch

    yield _make
    for client in made:
        if client.sio.connected:
            client.sio.disconnect()


def run(coro, timeout=60):
    """Runs an async test body with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(predicate, what, timeout=TIMEOUT):
    """Polls an async predicate until it returns a truthy value (returned)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
