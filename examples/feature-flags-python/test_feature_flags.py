"""The feature-flags example end to end: app.py as a process against a real
roomcast (standalone and a cluster), python-socketio clients."""

import os
import pathlib
import queue
import subprocess
import sys
import threading

import pytest

import roomcast

from sdk_testkit import API_KEY, run

pytestmark = pytest.mark.timeout(120)
HERE = pathlib.Path(__file__).resolve().parent
SDK = HERE.parents[1] / "clients" / "python" / "src"


@pytest.fixture
def app(target):
    env = {**os.environ, "PYTHONPATH": str(SDK)}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "app.py"), "--grpc", target.grpc_addr, "--api-key", API_KEY, "--admin", "ops"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    output = []
    try:
        while True:
            line = lines.get(timeout=20)
            output.append(line)
            if line.startswith("feature-flags ready"):
                break
    except queue.Empty:
        proc.kill()
        raise AssertionError("app.py did not get ready:\n" + "".join(output)) from None
    yield proc
    proc.terminate()
    assert proc.wait(timeout=10) == 0, "app.py should stop cleanly on SIGTERM"


def test_subscribe_gets_the_value_then_updates(app, clients):
    async def main():
        reader, other = await clients(2)
        (ops,) = await clients(1, sub="ops")

        assert await reader.call("feature:subscribe", {"id": "dark-mode"}) == {
            "ok": True,
            "id": "dark-mode",
            "value": False,
        }
        assert await other.call("feature:subscribe", {"id": "new-checkout"}) == {
            "ok": True,
            "id": "new-checkout",
            "value": {"rollout": 10},
        }

        assert await ops.call("feature:set", {"id": "dark-mode", "value": True}) == {"ok": True}
        assert await reader.next_event() == ("feature:update", [{"id": "dark-mode", "value": True}])
        await other.nothing()  # not subscribed to dark-mode

        # a later subscriber gets the current value in its ack
        assert (await other.call("feature:subscribe", {"id": "dark-mode"}))["value"] is True

        assert await reader.call("feature:unsubscribe", {"id": "dark-mode"}) == {"ok": True}
        assert await ops.call("feature:set", {"id": "dark-mode", "value": False}) == {"ok": True}
        assert await other.next_event() == ("feature:update", [{"id": "dark-mode", "value": False}])
        await reader.nothing()

    run(main())


def test_the_backend_validates(app, target, clients):
    async def main():
        (user,) = await clients(1)
        assert await user.call("feature:subscribe", {"id": "nope"}) == {"ok": False, "error": "unknown feature nope"}
        assert (await user.call("feature:subscribe", {"id": "../x"}))["ok"] is False
        assert (await user.call("feature:subscribe", "dark-mode"))["ok"] is False
        assert await user.call("feature:set", {"id": "dark-mode", "value": True}) == {
            "ok": False,
            "error": "admins only",
        }
        rc = roomcast.Server(target.grpc_addr, api_key=API_KEY)
        assert await rc.rooms(user.sid) == [user.sid], "a refused subscribe joins no room"
        await rc.close()
        (ops,) = await clients(1, sub="ops")
        assert (await ops.call("feature:set", {"id": "dark-mode"}))["error"] == "value is missing"

    run(main())
