"""The bad-input suites' harness (test_bad_inputs.py, the pull-request half, and test_bad_inputs_release.py,
the release half): how a case breaks a small base project, how it is run through the real `mlgate` in a
subprocess (a home, a temp folder and a runner of its own), and what every case is held to: its exit code,
exactly one error naming the problem, a `hint:` line, no traceback, no planted secret in the output, no
file written outside the project, no process left running (each case leads a session of its own, searched
after it exits), and the registry's aliases and every state file (the traffic split, a rollout's state) as
they were."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MLGATE = Path(sys.executable).parent / "mlgate"
CANARY = "canary-bad-9d1e"
# Every case runs with these: a password and a URI whose user info is the same secret.
CANARY_ENV = {
    "MLFLOW_TRACKING_PASSWORD": CANARY,
    "MLFLOW_TRACKING_URI": f"http://u:{CANARY}@127.0.0.1:9",
    "MLGATE_MLFLOW_BACKOFF_S": "0.01",
}
WORKERS = 3
TIMEOUT_S = 120

BASE_CONFIG = """version: 1
project: stub
data:
  sources:
    train: {path: data/train.csv}
  expectations:
    columns:
      x: {type: float}
      y: {type: int}
train:
  command: PYTHON -c pass
  profiles: {quick: {}}
  seed: 7
  device: cpu
model_tests:
  holdout: train
  label: y
  performance: {metrics: {roc_auc: 0.4}}
"""
TRAIN_CSV = "x,y\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10))

# A line that starts one error: an annotation (`path:line: error:`, `error:`, `::error ...::`) or argparse's.
ERROR_LINE = re.compile(r"^(?:::error[ :]|(?:\S+: )?error: |mlgate(?: [\w-]+)?: error: )")
# The count a gate that lists findings ends with (check, validate-data): not a second message, it says "1".
GATE_COUNT = re.compile(r"(?:::|^error: )(?:mlgate check: 1 error in |data validation failed: 1 expectation)")

Make = Callable[[Path], None]


def base_project(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    (root / "mlgate.yaml").write_text(BASE_CONFIG.replace("PYTHON", sys.executable), encoding="utf-8")
    (root / "data" / "train.csv").write_text(TRAIN_CSV, encoding="utf-8")


# --- how a case breaks the base project ----------------------------------------------------------------


def nothing(root: Path) -> None:
    del root


def write(name: str, data: str | bytes) -> Make:
    def make(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            path.rmdir()
        elif path.exists() or path.is_symlink():
            path.unlink()
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")

    return make


def edit(old: str, new: str) -> Make:
    """Replace `old` (which must be there) in the base mlgate.yaml."""

    def make(root: Path) -> None:
        path = root / "mlgate.yaml"
        text = path.read_text(encoding="utf-8")
        assert old in text, old
        path.write_text(text.replace(old, new), encoding="utf-8")

    return make


def remove(name: str) -> Make:
    def make(root: Path) -> None:
        (root / name).unlink()

    return make


def folder(name: str) -> Make:
    def make(root: Path) -> None:
        path = root / name
        if path.exists():
            path.unlink()
        path.mkdir(parents=True)

    return make


def symlink_out(name: str) -> Make:
    """`name` becomes a symlink to a CSV in the sibling folder `outside/`, whose header is the canary."""

    def make(root: Path) -> None:
        secret = root.parent / "outside" / "secret.csv"
        secret.write_text(f"x,{CANARY}\n1,2\n", encoding="utf-8")
        (root / name).unlink()
        (root / name).symlink_to(secret)

    return make


def folder_out(name: str) -> Make:
    """`name` becomes a symlink to the sibling folder `outside/`, which holds a file named after the canary."""

    def make(root: Path) -> None:
        outside = root.parent / "outside"
        (outside / f"{CANARY}.py").write_text("x = 1\n", encoding="utf-8")
        (outside / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
        (root / name).symlink_to(outside, target_is_directory=True)

    return make


def file_out(name: str) -> Make:
    """`name` becomes a symlink to a file in the sibling folder `outside/`, whose contents are the canary."""

    def make(root: Path) -> None:
        secret = root.parent / "outside" / "pins.txt"
        secret.write_text(f"{CANARY}==1\n", encoding="utf-8")
        (root / name).symlink_to(secret)

    return make


def git_commit(root: Path) -> None:
    """The project as a git repository with one commit."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "project"]):
        subprocess.run([*git, *args], cwd=root, check=True, capture_output=True)


def both(*makes: Make) -> Make:
    def make(root: Path) -> None:
        for one in makes:
            one(root)

    return make


# A small alias bomb: nine levels of ten aliases each, far past the loader's alias budget, yet tiny.
ALIAS_BOMB = "version: 1\nproject: stub\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
)
NON_UTF8_CSV = "x,caf\xe9\n1,2\n".encode("latin-1")
PARQUET_SOURCE = "train: {path: data/train.parquet}"
DVC_YAML = "stages: {}\n"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # after `mlgate`; `{root}` is the project folder
    make: Make  # breaks the base project
    code: int  # the exit code that says what is wrong
    says: str  # text the one error message must contain
    env: Mapping[str, str] = field(default_factory=dict)
    actions: bool = False  # run as in GitHub Actions (GITHUB_ACTIONS=true, a step summary file)
    xfail: str | None = None


SQLITE = "sqlite:///{root}/mlflow.db"


def traffic_hook(run: str) -> Make:
    """The base project with `traffic.backend: command` running `run` (timeout 1 s)."""
    return edit(LAST, LAST + f"\ntraffic: {{backend: command, command: {{run: {json.dumps(run)}, timeout_s: 1}}}}")


def registered_pair(root: Path) -> None:
    """`fraud` v1 @champion and v2 @challenger in the project's sqlite store, with passing evidence."""
    code = (
        "import sys, mlflow\n"
        "from mlflow import MlflowClient\n"
        "uri = sys.argv[1]\n"
        "mlflow.set_tracking_uri(uri)\n"
        "client = MlflowClient(uri, uri)\n"
        "exp = client.create_experiment('x')\n"
        "client.create_registered_model('fraud')\n"
        "for alias in ('champion', 'challenger'):\n"
        "    run = client.create_run(exp)\n"
        "    model = client.create_logged_model(exp, source_run_id=run.info.run_id)\n"
        "    v = client.create_model_version('fraud', f'models:/{model.model_id}', model_id=model.model_id,\n"
        "        tags={'mlgate.model_tests.passed': 'true',\n"
        '              \'mlgate.metrics\': \'{"candidate": {"roc_auc": 0.9}, "champion": {"roc_auc": 0.8}}\'})\n'
        "    client.set_registered_model_alias('fraud', alias, v.version)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, SQLITE.format(root=root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    config = root / "mlgate.yaml"  # the base project's
    config.write_text(config.read_text() + "\nregistry: {model: fraud, promotion: {metric: roc_auc}}\n")


def model_tag(key: str, value: str) -> Make:
    """A tag `key` of the registered model `fraud` (registered_pair's) set to `value`."""

    def make(root: Path) -> None:
        code = (
            "import sys\nfrom mlflow import MlflowClient\n"
            "MlflowClient(sys.argv[1], sys.argv[1]).set_registered_model_tag(*sys.argv[2:])\n"
        )
        uri = SQLITE.format(root=root)
        done = subprocess.run([sys.executable, "-c", code, uri, "fraud", key, value], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]

    return make


def version_tag(version: str, key: str, value: str) -> Make:
    """A tag `key` of version `version` of the registered model `fraud` (registered_pair's) set to `value`."""

    def make(root: Path) -> None:
        code = (
            "import sys\nfrom mlflow import MlflowClient\n"
            "MlflowClient(sys.argv[1], sys.argv[1]).set_model_version_tag('fraud', *sys.argv[2:])\n"
        )
        uri = SQLITE.format(root=root)
        command = [sys.executable, "-c", code, uri, version, key, value]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]

    return make


TM = ("test-model", "--no-comment")
CP = ("compress", "--no-comment")
LAST = "performance: {metrics: {roc_auc: 0.4}}"  # the last line of BASE_CONFIG
PR_WORKFLOW = (
    "on: pull_request\njobs:\n  ml-ci:\n    uses: mlgate/mlgate/.github/workflows/ml-ci.yml@v1\n"
    "    permissions: {contents: read}\n"
)
COMPRESS = "\ncompress: {methods: [onnx, int8], budgets: {max_size_mb: 1}}"


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    written_outside: list[str]
    runner_files: str  # the step summary and outputs file, for the leak check
    processes_left: list[str]  # the command lines of processes the case's mlgate left running (killed since)
    held: tuple[dict[str, object], dict[str, object]]  # held_state before and after the case

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def held_state(root: Path) -> dict[str, object]:
    """What a refused command must leave as it was: the registry's aliases (the project's sqlite store) and
    every state file under the project (the traffic split a backend recorded, a rollout's state)."""
    aliases: list[tuple[str, str, int]] = []
    store = root / "mlflow.db"
    if store.is_file():
        with contextlib.closing(sqlite3.connect(store)) as db:
            try:
                aliases = sorted(db.execute("SELECT name, alias, version FROM registered_model_aliases"))
            except sqlite3.OperationalError:
                aliases = []  # a store without the registry's tables: no aliases
    states = {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("state.json"))
        if path.is_file()
    }
    return {"aliases": aliases, "state files": states}


def session_members(session: int) -> list[tuple[int, str]]:
    """The processes of `session` still running (a case's mlgate leads a session of its own): pid, command."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            found.append((int(entry.name), cmdline))
    return found


def tree(folder: Path) -> dict[str, int]:
    """Every path under `folder` with its size (-1 for folders), symlinks not followed."""
    found: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), folder)] = -1
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, folder)] = os.lstat(path).st_size
    return found


def case_env(case: Case, case_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "MLGATE_", "MLFLOW_", "RUNNER_", "ACTIONS_")) and k != "CI"
    }
    env.update(CANARY_ENV)
    # A home and a temp folder of its own, beside the project: whatever lands there is written outside it
    # (MLflow's telemetry id in ~/.config/mlflow included, which mlgate's telemetry opt-out prevents).
    env.update(HOME=str(case_dir / "home"), TMPDIR=str(case_dir / "tmp"), PYTHONDONTWRITEBYTECODE="1")
    if case.actions:
        runner = case_dir / "runner"
        env.update(
            GITHUB_ACTIONS="true",
            GITHUB_STEP_SUMMARY=str(runner / "summary.md"),
            GITHUB_OUTPUT=str(runner / "output"),
            GITHUB_WORKSPACE=str(case_dir / "proj"),
        )
    env.update(case.env)
    return env


def run_case(case: Case, case_dir: Path) -> Outcome:
    root = case_dir / "proj"
    for name in ("proj", "outside", "home", "tmp", "runner"):
        (case_dir / name).mkdir(parents=True)
    (case_dir / "runner" / "summary.md").touch()
    (case_dir / "runner" / "output").touch()
    base_project(root)
    case.make(root)
    argv = [arg.replace("{root}", str(root)) for arg in case.argv]
    before = {k: v for k, v in tree(case_dir).items() if not k.startswith(("proj", "runner"))}
    held_before = held_state(root)
    started = time.perf_counter()
    child = subprocess.Popen(
        [str(MLGATE), *argv],
        cwd=root,
        env=case_env(case, case_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,  # whatever it starts stays in its session, found and killed below
    )
    try:
        stdout, stderr = child.communicate(timeout=TIMEOUT_S)
    finally:
        left = session_members(child.pid)
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
            child.communicate()
    seconds = time.perf_counter() - started
    after = {k: v for k, v in tree(case_dir).items() if not k.startswith(("proj", "runner"))}
    written = sorted(k for k in after if before.get(k) != after[k])
    runner_files = "".join(p.read_text(errors="replace") for p in (case_dir / "runner").iterdir())
    return Outcome(
        child.returncode,
        stdout,
        stderr,
        seconds,
        written,
        runner_files,
        processes_left=[command for _, command in left],
        held=(held_before, held_state(root)),
    )


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True).stdout


@dataclass
class Table:
    outcomes: dict[str, Outcome]
    repo_status: tuple[str, str]  # `git status` of this repository before and after every case


def run_table(cases: list[Case], base: Path) -> Table:
    """Every case, run once, in parallel (each is a process of its own, most waiting on imports)."""
    status_before = git_status()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {case.id: pool.submit(run_case, case, base / case.id) for case in cases}
        results = {name: future.result() for name, future in futures.items()}
    return Table(results, (status_before, git_status()))


def leaked(outcome: Outcome) -> bool:
    # `::add-mask::` hands a secret to the runner so that it masks it; it is the one line that must name it.
    shown = [line for line in outcome.output.splitlines() if not line.startswith("::add-mask::")]
    return CANARY in "\n".join(shown) or CANARY in outcome.runner_files


def error_blocks(outcome: Outcome) -> list[str]:
    """Each error message with the lines that continue it, up to the next error or hint."""
    blocks: list[list[str]] = []
    for stream in (outcome.stdout, outcome.stderr):
        current: list[str] | None = None
        for line in stream.splitlines():
            if GATE_COUNT.search(line):
                current = None
            elif ERROR_LINE.match(line):
                current = [line]
                blocks.append(current)
            elif line.startswith("hint:") or line.startswith("::"):
                current = None
            elif current is not None:
                current.append(line)
    return ["\n".join(block).replace("%0A", "\n") for block in blocks]


def params(cases: list[Case]) -> list[Any]:
    """The cases as pytest params, a case with `xfail` marked strictly."""
    return [
        pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [])
        for case in cases
    ]


def check(case: Case, outcome: Outcome) -> None:
    """What every case is held to."""
    shown = f"exit {outcome.code}\n--- stdout\n{outcome.stdout[-3000:]}\n--- stderr\n{outcome.stderr[-3000:]}"
    assert "Traceback" not in outcome.output, shown
    assert not leaked(outcome), shown
    assert outcome.written_outside == [], shown
    assert outcome.processes_left == [], shown
    before, after = outcome.held
    assert after == before, f"the aliases or a state file changed: {before} -> {after}\n{shown}"
    assert outcome.code == case.code, shown
    blocks = error_blocks(outcome)
    assert len(blocks) == 1, shown
    assert case.says in blocks[0], shown
    assert re.search(r"^hint: \S", outcome.stderr, re.MULTILINE), shown


def summary(title: str, record: str, cases: list[Case], table: Table, capsys: pytest.CaptureFixture[str]) -> None:
    """The figures of the whole table, printed and written to bench-results/`record`.json when that folder
    exists (not asserted: each case asserts its own outcome)."""
    outcomes = {case.id: table.outcomes[case.id] for case in cases}
    expected = {case.id: case.code for case in cases}
    slowest = max(outcomes, key=lambda name: outcomes[name].seconds)
    figures = {
        "cases": len(outcomes),
        "tracebacks": sum("Traceback" in o.output for o in outcomes.values()),
        "leaks": sum(leaked(o) or bool(o.written_outside) for o in outcomes.values()),
        "silent_acceptances": sum(o.code == 0 and expected[name] != 0 for name, o in outcomes.items()),
        "slowest_failure_s": round(outcomes[slowest].seconds, 2),
        "slowest_case": slowest,
        "total_case_s": round(sum(o.seconds for o in outcomes.values()), 2),
        "per_case_s": {name: round(o.seconds, 2) for name, o in outcomes.items()},
    }
    line = " ".join(f"{k}={v}" for k, v in figures.items() if k != "per_case_s")
    with capsys.disabled():
        print(f"\n{title}: {line}")
    results = ROOT / "bench-results"
    if results.is_dir():
        (results / f"{record}.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
