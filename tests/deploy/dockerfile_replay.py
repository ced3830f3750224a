"""Replays the file-moving part of deploy/docker/Dockerfile without a Docker
engine, so that a build context that would not build fails a test here.

Each stage gets a folder that stands for its root filesystem. What the
Dockerfile says is what runs: `COPY` (from the build context, filtered by
`.dockerignore`, or `--from` an earlier stage), `WORKDIR`, `ENV`/`ARG`, and the
`RUN`s that prepare files, executed by `sh` in the stage's folder (absolute
paths that a later `COPY --from` reads are mapped into the stage's folder).
A `RUN` that invokes cargo is where the image compiles: there the workspace
as the stage holds it is checked with `cargo metadata --locked` and
`cargo check --locked --offline -p <package>` (the package the `RUN` builds),
which fail exactly when the image's cargo would not find a manifest, a
source file, or a dependency set matching Cargo.lock.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass
class Instruction:
    op: str
    args: str
    line: int


def parse(text):
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + "\n"
            continue
        buf += line
        op, _, args = buf.strip().partition(" ")
        out.append(Instruction(op.upper(), args.strip(), start))
        buf = ""
    if buf:
        raise ValueError("the Dockerfile ends inside a continued instruction")
    return out


def substitute(text, variables):
    def repl(m):
        name = m.group(1) or m.group(2)
        return variables.get(name, "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, text)


class DockerIgnore:
    """`.dockerignore` patterns (Go filepath.Match plus `**`, `!` exceptions)."""

    def __init__(self, path):
        self.rules = []
        if path.exists():
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                negate = line.startswith("!")
                pattern = os.path.normpath(line.lstrip("!").strip("/"))
                self.rules.append((negate, pattern))

    @staticmethod
    def _match(pattern, rel):
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                c = pattern[i]
                regex += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
                i += 1
        # A pattern that matches a folder matches everything below it.
        return re.fullmatch(regex + "(?:/.*)?", rel) is not None

    def ignored(self, rel):
        result = False
        for negate, pattern in self.rules:
            if self._match(pattern, rel):
                result = not negate
        return result


@dataclass
class Stage:
    name: str
    root: pathlib.Path
    workdir: str = "/"
    env: dict = field(default_factory=dict)

    def path(self, inside):
        inside = inside if inside.startswith("/") else os.path.join(self.workdir, inside)
        return self.root / os.path.normpath(inside).lstrip("/")


def copy_tree(src, dst, skip=lambda rel: False, base=""):
    """Docker's COPY of one source: a folder's contents go into dst, a file
    becomes dst (or goes into it when dst is a folder)."""
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            rel = f"{base}/{child.name}" if base else child.name
            if skip(rel):
                continue
            if child.is_symlink() or child.is_file():
                shutil.copy2(child, dst / child.name, follow_symlinks=False)
            elif child.is_dir():
                copy_tree(child, dst / child.name, skip, rel)
    else:
        if dst.is_dir():
            dst = dst / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


@dataclass
class CargoStep:
    """A cargo invocation of the Dockerfile, at the point it runs."""

    stage: str
    line: int
    workspace: pathlib.Path
    packages: list
    command: str


class Replay:
    def __init__(self, dockerfile, context, scratch):
        self.dockerfile = pathlib.Path(dockerfile)
        self.context = pathlib.Path(context)
        self.scratch = pathlib.Path(scratch)
        self.instructions = parse(self.dockerfile.read_text())
        self.ignore = DockerIgnore(self.context / ".dockerignore")
        self.stages = {}
        self.cargo_commands = {}
        # COPY --from sources that only a cargo RUN would have made: (line, path).
        self.skipped = []

    def _exported_roots(self, stage_name):
        """First components of the absolute paths later stages COPY --from `stage_name`."""
        roots = set()
        for ins in self.instructions:
            if ins.op != "COPY":
                continue
            words = shlex.split(ins.args)
            flags = [w for w in words if w.startswith("--")]
            if f"--from={stage_name}" in flags:
                for src in [w for w in words if not w.startswith("--")][:-1]:
                    if src.startswith("/"):
                        roots.add("/" + src.strip("/").split("/")[0])
        return roots

    def run(self, on_cargo):
        """Replays every stage; `on_cargo(CargoStep)` runs where the Dockerfile runs cargo."""
        global_args = {}
        stage = None
        index = 0
        for ins in self.instructions:
            if ins.op == "ARG" and stage is None:
                name, _, default = ins.args.partition("=")
                global_args[name] = default
            elif ins.op == "FROM":
                words = substitute(ins.args, global_args).split()
                name = words[words.index("AS") + 1] if "AS" in words else (words[words.index("as") + 1] if "as" in words else str(index))
                index += 1
                root = self.scratch / f"stage-{name}"
                root.mkdir(parents=True)
                base = words[0]
                stage = Stage(name, root)
                if base in self.stages:  # FROM an earlier stage: start from its files
                    copy_tree(self.stages[base].root, root)
                    stage.workdir = self.stages[base].workdir
                    stage.env = dict(self.stages[base].env)
                self.stages[name] = stage
            elif stage is None:
                raise ValueError(f"line {ins.line}: {ins.op} before FROM")
            elif ins.op == "ARG":
                name, _, default = ins.args.partition("=")
                stage.env[name] = default or global_args.get(name, "")
            elif ins.op == "WORKDIR":
                stage.workdir = os.path.join(stage.workdir, substitute(ins.args, stage.env))
                stage.path(stage.workdir).mkdir(parents=True, exist_ok=True)
            elif ins.op == "ENV":
                for word in shlex.split(ins.args):
                    key, _, value = word.partition("=")
                    stage.env[key] = substitute(value, stage.env)
            elif ins.op == "COPY":
                self._copy(stage, ins)
            elif ins.op == "RUN":
                self._run(stage, ins, on_cargo)
            # LABEL, USER, EXPOSE, ENTRYPOINT, CMD: nothing to replay.
        return self.stages

    def _copy(self, stage, ins):
        words = shlex.split(substitute(ins.args, stage.env))
        flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
        paths = [w for w in words if not w.startswith("--")]
        *sources, dest = paths
        assert sources, f"line {ins.line}: COPY without a source"
        dst = stage.path(dest)
        if dest.endswith("/") or len(sources) > 1:
            dst.mkdir(parents=True, exist_ok=True)
        for src in sources:
            if "from" in flags:
                other = self.stages[flags["from"]]
                source = other.path(src)
                if not source.exists() and any(src.rstrip("/") in c for c in self.cargo_commands.get(other.name, [])):
                    self.skipped.append((ins.line, src))  # made by a cargo RUN, which is checked, not run
                    continue
                assert source.exists(), f"line {ins.line}: {src} does not exist in stage {flags['from']}"
                copy_tree(source, dst)
            else:
                rel = os.path.normpath(src)
                source = self.context / rel
                assert source.exists() and not self.ignore.ignored(rel if rel != "." else ""), (
                    f"line {ins.line}: {src} is not in the build context")
                prefix = "" if rel == "." else rel
                copy_tree(source, dst, lambda r: self.ignore.ignored(os.path.join(prefix, r)), "")

    def _run(self, stage, ins, on_cargo):
        command = ins.args
        if re.search(r"(^|[\s;&|(])cargo\s", command):
            packages = re.findall(r"(?:-p|--package)\s+([\w-]+)", command)
            self.cargo_commands.setdefault(stage.name, []).append(command)
            on_cargo(CargoStep(stage.name, ins.line, stage.path(stage.workdir), packages, command))
            return
        for root in self._exported_roots(stage.name):
            command = re.sub(r"(?<=[\s\"'=])" + re.escape(root) + r"(?=[/\s\"';]|$)", str(stage.root) + root, command)
        env = {**os.environ, **stage.env}
        result = subprocess.run(["/bin/sh", "-c", command], cwd=stage.path(stage.workdir), env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"line {ins.line}: RUN failed ({result.returncode}):\n{result.stderr}"
