"""The load harness's comparison of two roomcast builds (benches/harness.py):
the ratios it computes from load generator reports, and one real run of the
idle scenario with `roomcast` and `roomcast-base` from the same binary."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from kit import BIN, REPO

HARNESS = REPO / "benches" / "harness.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("bench_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step(name, delivered, cpu, saturated=False):
    return {"name": name, "delivered": delivered, "server_cpu_s": cpu, "saturated": saturated}


def load_report(steps):
    return {"steps": [step("warmup", 10, 5.0)] + steps, "load_average_at_start": [3.0, 2.0, 1.0]}


def idle_report(kib, connected=2000):
    return {"server_rss_per_conn_kib": kib, "connected": connected,
            "load_average_at_start": [3.0, 2.0, 1.0]}


def test_base_variants_follow_their_roomcast_system(harness):
    assert harness.with_base(["roomcast", "socketioxide", "node"], True) == [
        "roomcast", "roomcast-base", "socketioxide", "node"]
    assert harness.with_base(["roomcast-cluster", "node-redis"], True) == [
        "roomcast-cluster", "roomcast-cluster-base", "node-redis"]
    assert harness.with_base(["roomcast", "node"], False) == ["roomcast", "node"]


def test_base_system_runs_the_base_binary(harness, monkeypatch):
    monkeypatch.setattr(harness, "ROOMCAST_BASE", pathlib.Path("/base/roomcast"))
    assert harness.system_kind("roomcast-base") == ("roomcast", pathlib.Path("/base/roomcast"))
    assert harness.system_kind("roomcast-stream-base")[0] == "roomcast-stream"
    assert harness.system_kind("roomcast") == ("roomcast", harness.ROOMCAST)
    monkeypatch.setattr(harness, "ROOMCAST_BASE", None)
    with pytest.raises(ValueError, match="--roomcast-base-bin"):
        harness.system_kind("roomcast-base")


def test_cpu_ratio_uses_only_steps_both_ran_unsaturated(harness):
    this = load_report([step("5/s", 10_000, 0.10), step("20/s", 40_000, 0.30),
                        step("80/s", 160_000, 2.0, saturated=True)])
    base = load_report([step("5/s", 10_000, 0.10), step("20/s", 40_000, 0.20),
                        step("80/s", 160_000, 0.8)])
    runs = [{"broadcast": {"roomcast": this, "roomcast-base": base}}]
    rep = harness.base_comparison(runs)["broadcast"]["roomcast"]["repetitions"][0]
    assert rep["steps"] == ["5/s", "20/s"]
    assert rep["cpu_us_per_delivery"] == pytest.approx(0.40 / 50_000 * 1e6)
    assert rep["base_cpu_us_per_delivery"] == pytest.approx(0.30 / 50_000 * 1e6)
    assert rep["ratio"] == pytest.approx(4 / 3)
    assert rep["ratio_per_step"] == {"5/s": pytest.approx(1.0), "20/s": pytest.approx(1.5)}


def test_pooled_ratio_weighs_repetitions_by_their_deliveries(harness):
    small = {"broadcast": {"roomcast": load_report([step("5/s", 1_000, 0.02)]),
                           "roomcast-base": load_report([step("5/s", 1_000, 0.01)])}}
    large = {"broadcast": {"roomcast": load_report([step("5/s", 9_000, 0.09)]),
                           "roomcast-base": load_report([step("5/s", 9_000, 0.09)])}}
    ratio = harness.base_comparison([small, large])["broadcast"]["roomcast"]["ratio"]
    assert ratio["median"] == pytest.approx(1.5)
    assert ratio["pooled"] == pytest.approx((0.11 / 10_000) / (0.10 / 10_000))


def test_lowest_rate_ratio_is_reported_on_its_own(harness):
    runs = [{"chat": {"roomcast": load_report([step("1000/s", 4_000, 0.10),
                                               step("2000/s", 8_000, 0.40)]),
                      "roomcast-base": load_report([step("1000/s", 4_000, 0.08),
                                                    step("2000/s", 8_000, 0.20)])}}] * 2
    entry = harness.base_comparison(runs)["chat"]["roomcast"]
    assert entry["lowest_step"] == "1000/s"
    assert entry["lowest_step_ratio"]["pooled"] == pytest.approx(1.25)
    assert entry["ratio"]["pooled"] == pytest.approx(0.50 / 0.28)
    md = "\n".join(harness.comparison_markdown(harness.base_comparison(runs)))
    assert "at the lowest rate only (1000/s)" in md


def test_idle_ratio_and_spread_over_repetitions(harness):
    runs = [{"idle": {"roomcast": idle_report(k), "roomcast-base": idle_report(4.0)}}
            for k in (4.4, 3.8, 4.0)]
    entry = harness.base_comparison(runs)["idle"]["roomcast"]
    assert [r["ratio"] for r in entry["repetitions"]] == [
        pytest.approx(1.1), pytest.approx(0.95), pytest.approx(1.0)]
    assert entry["ratio"]["median"] == pytest.approx(1.0)
    assert entry["ratio"]["min"] == pytest.approx(0.95)
    assert entry["ratio"]["max"] == pytest.approx(1.1)
    assert entry["ratio"]["pooled"] == pytest.approx(12.2 / 12.0)
    md = "\n".join(harness.comparison_markdown(harness.base_comparison(runs)))
    assert "median 1.000" in md and "KiB per idle connection" in md


def test_a_failed_system_is_reported_not_compared(harness):
    runs = [{"idle": {"roomcast": None, "roomcast-base": idle_report(4.0)}}]
    entry = harness.base_comparison(runs)["idle"]["roomcast"]
    assert entry["repetitions"] == [{"repetition": 1, "failed": ["roomcast"]}]
    assert entry["ratio"] is None


def test_same_build_as_both_systems_in_one_run(tmp_path):
    """The idle scenario (2,000 sockets) with both systems from one binary."""
    loadgen = os.environ.get("LOADGEN_BIN") or str(pathlib.Path(BIN).parent / "roomcast-loadgen")
    assert os.access(BIN, os.X_OK), f"roomcast binary not found at {BIN}"
    assert os.access(loadgen, os.X_OK), f"load generator not found at {loadgen}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    env.update({"ROOMCAST_BIN": BIN, "LOADGEN_BIN": loadgen})
    out = tmp_path / "results"
    subprocess.run(
        [sys.executable, str(HARNESS), "--quick", "--scenarios", "idle",
         "--systems", "roomcast,roomcast-base", "--roomcast-base-bin", BIN, "--out", str(out)],
        env=env, check=True, timeout=100, stdout=subprocess.DEVNULL)
    results = json.loads((out / "results.json").read_text())
    binaries = results["machine"]["binaries"]
    assert binaries["roomcast"]["sha256"] == binaries["roomcast (base)"]["sha256"]
    assert list(results["results"]["idle"]) == ["roomcast", "roomcast-base"]
    assert results["results"]["idle"]["roomcast-base"]["label"] == "roomcast-base"
    rep = results["comparison"]["idle"]["roomcast"]["repetitions"][0]
    assert rep["connected"] == [2000, 2000]
    assert rep["kib_per_conn"] > 0 and rep["base_kib_per_conn"] > 0
    assert rep["ratio"] == pytest.approx(rep["kib_per_conn"] / rep["base_kib_per_conn"])
    assert (out / "raw" / "idle-roomcast-base.json").exists()
    assert "This build against the base build" in (out / "summary.md").read_text()
