"""The container image's build context builds: deploy/docker/Dockerfile
replayed without Docker (see dockerfile_replay.py), cargo run offline at each
point the Dockerfile runs it."""

import json
import os
import pathlib
import subprocess
import time

import pytest

from dockerfile_replay import DockerIgnore, Replay, parse

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
# A target folder of its own (the replayed workspace's crates must not replace
# the build's binary); kept between runs so that dependencies compile once.
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "docker-replay"


def cargo(args, cwd, timeout=1500):
    env = {**os.environ, "CARGO_TARGET_DIR": str(TARGET), "CARGO_TERM_COLOR": "never"}
    return subprocess.run(["cargo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def touch_sources(workspace):
    """Dates every source file now. COPY keeps modification times, and the
    replay's target folder is shared between steps and runs (the image's own
    build touches its sources for the same reason): without this, cargo would
    take the stubs' or an earlier run's results for these sources."""
    now = time.time()
    for path in pathlib.Path(workspace).rglob("*"):
        if path.is_file():
            os.utime(path, (now, now))


def members(workspace):
    result = cargo(["metadata", "--locked", "--offline", "--format-version", "1", "--no-deps"], workspace, 120)
    assert result.returncode == 0, f"cargo metadata failed in {workspace}:\n{result.stderr}"
    meta = json.loads(result.stdout)
    return {p["name"] for p in meta["packages"]}


@pytest.mark.timeout(1800)
def test_the_image_build_context_builds(tmp_path):
    steps = []

    def on_cargo(step):
        # Exactly where the image runs cargo: the workspace must load with the
        # lock file unchanged, and the package the image builds must compile.
        assert step.packages, f"line {step.line}: the image builds no named package: {step.command}"
        names = members(step.workspace)
        expected = members(REPO)
        assert names == expected, f"line {step.line}: the image's workspace has {sorted(names)}, the repository {sorted(expected)}"
        touch_sources(step.workspace)
        for package in step.packages:
            result = cargo(["check", "--locked", "--offline", "-p", package], step.workspace)
            assert result.returncode == 0, f"line {step.line} ({step.stage}): cargo check -p {package} failed:\n{result.stderr[-6000:]}"
        steps.append(step)

    Replay(DOCKERFILE, REPO, tmp_path).run(on_cargo)
    # The dependency layer (stubs) and the real sources are both compiled.
    assert len(steps) >= 2, [s.command for s in steps]


def test_the_replay_sees_a_missing_workspace_member(tmp_path):
    """The check fails when the context misses a member: the Dockerfile's
    plan stage with the member loop cut down to crates/ only, as it was."""
    text = DOCKERFILE.read_text()
    broken = text.replace('for m in $members; do echo "$m"/; done', "echo crates/*/")
    assert broken != text, "the plan stage's member loop changed; update this test"
    (tmp_path / "Dockerfile").write_text(broken)
    failures = []

    def on_cargo(step):
        result = cargo(["metadata", "--locked", "--offline", "--format-version", "1", "--no-deps"], step.workspace, 120)
        failures.append(result)

    Replay(tmp_path / "Dockerfile", REPO, tmp_path / "scratch").run(on_cargo)
    assert failures and failures[0].returncode != 0
    assert "failed to load manifest for workspace member" in failures[0].stderr


def test_parse_and_dockerignore():
    ins = parse("# c\nFROM a AS b\nRUN x \\\n  # inner\n  y\nCOPY . .\n")
    assert [(i.op, i.args) for i in ins] == [("FROM", "a AS b"), ("RUN", "x \n  y"), ("COPY", ". .")]
    ignore = DockerIgnore(REPO / ".dockerignore")
    assert ignore.ignored("target") and ignore.ignored("target/debug/roomcast")
    assert ignore.ignored("tests/e2e/node_modules/ws/index.js") and ignore.ignored(".git")
    assert not ignore.ignored("crates/edge/src/lib.rs") and not ignore.ignored("Cargo.lock")
