"""Runs the example project's real workflows under act, with this checkout as mlgate/mlgate@v1.

A `Workbench` holds what one test session shares: an export of this checkout (tracked and
untracked-but-not-ignored files, exactly what a push would publish), the venv root the setup action
reuses (as a self-hosted runner keeps its tool cache), the stand-in cache and artifact folders, and
act's action cache. A `Project` is one copy of example-project as its own git repository, with its
data pushed to a DVC remote of its own, on which a pull request is simulated.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlgate import RELEASE_REF, REPOSITORY

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.github_api import GitHubApiStandin  # noqa: E402
from tests.e2e.standins import local_repository_args  # noqa: E402

BIN = Path(sys.executable).parent


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("GIT_AUTHOR_NAME", "mlgate tests")
    env.setdefault("GIT_AUTHOR_EMAIL", "tests@mlgate.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "mlgate tests")
    env.setdefault("GIT_COMMITTER_EMAIL", "tests@mlgate.invalid")
    return env


def export_checkout(source: Path, dest: Path) -> Path:
    """Copy the files git would publish from `source` (tracked + untracked, not ignored)."""
    listing = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], source)
    dest.mkdir(parents=True, exist_ok=True)
    for name in filter(None, listing.stdout.split("\0")):
        origin = source / name
        if not origin.is_file():  # deleted in the working tree but still in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, target)
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ActResult:
    returncode: int
    output: str
    seconds: float
    artifacts: Path

    def job_lines(self, job: str) -> list[str]:
        return [line for line in self.output.splitlines() if job in line]


class Project:
    """One copy of example-project as a git repository whose data lives in a DVC remote."""

    def __init__(self, path: Path, remote: Path) -> None:
        self.path = path
        self.remote = remote
        self.env = _tool_env()
        self.runs = 0

    def dvc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([str(BIN / "dvc"), *args], self.path, self.env)

    def git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(["git", *args], self.path, self.env)

    def change_data(self, source: str, change: Callable[[pd.DataFrame], pd.DataFrame], message: str) -> None:
        """A pull request that brings a new version of a data file: edit, dvc commit, push, git commit."""
        csv = self.path / "data" / f"{source}.csv"
        frame = change(pd.read_csv(csv))
        frame.to_csv(csv, index=False)
        self.dvc("commit", "--force", "generate")
        self.dvc("push")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def forget_local_data(self) -> None:
        """Leave only what a fresh clone has, so the job must `dvc pull` from the remote."""
        for csv in (self.path / "data").glob("*.csv"):
            csv.unlink()
        shutil.rmtree(self.path / ".dvc" / "cache", ignore_errors=True)


class Workbench:
    def __init__(self, root: Path, tracking_uri: str | None = None) -> None:
        self.root = root
        self.tracking_uri = tracking_uri
        self.mlgate = export_checkout(REPO_ROOT, root / "mlgate")
        self.venv_root = root / "runner-tool-cache"
        self.cache_dir = root / "standin-cache"
        self.act_cache = root / "act-cache"
        for folder in (self.venv_root, self.cache_dir, self.act_cache):
            folder.mkdir(parents=True, exist_ok=True)
        self.env = _tool_env()
        self._count = 0

    def new_project(self, name: str) -> Project:
        self._count += 1
        path = self.root / "projects" / f"{self._count:02d}-{name}"
        shutil.copytree(self.mlgate / "example-project", path)
        remote = self.root / "remotes" / path.name
        project = Project(path, remote)
        project.git("init", "-q", "-b", "main")
        project.git("remote", "add", "origin", "https://github.com/example/fraud-detection.git")
        _run(["bash", "scripts/setup-dvc-remote.sh", str(remote)], path, project.env)
        project.git("add", "-A")
        project.git("commit", "-q", "-m", "fraud-detection: initial")
        project.git("checkout", "-q", "-b", f"pr/{name}")
        return project

    def event(
        self, project: Project, number: int = 7, event: str = "pull_request", inputs: dict[str, str] | None = None
    ) -> Path:
        head = project.git("rev-parse", "HEAD").stdout.strip()
        branch = project.git("branch", "--show-current").stdout.strip()
        repository = {"full_name": "example/fraud-detection", "name": "fraud-detection"}
        if event != "pull_request":
            payload: dict[str, object] = {"ref": f"refs/heads/{branch}", "after": head, "repository": repository}
            if inputs is not None:
                payload["inputs"] = inputs
            path = project.path.parent / f"{project.path.name}-{event}.json"
            path.write_text(json.dumps(payload), encoding="utf-8")
            return path
        payload = {
            "action": "synchronize",
            "number": number,
            "pull_request": {
                "number": number,
                "head": {"ref": project.git("branch", "--show-current").stdout.strip(), "sha": head},
                "base": {"ref": "main"},
            },
            "repository": {"full_name": "example/fraud-detection", "name": "fraud-detection"},
        }
        path = project.path.parent / f"{project.path.name}-event.json"
        path.write_text(json.dumps(payload), encoding="utf-8")
        return path

    def act(
        self,
        project: Project,
        workflow: str = "pr.yml",
        event: str = "pull_request",
        inputs: dict[str, str] | None = None,
        *,
        github_api: GitHubApiStandin | None = None,
    ) -> ActResult:
        project.forget_local_data()
        # Artifacts belong to one workflow run, as on GitHub: a second run of the same project starts empty.
        project.runs += 1
        artifacts = project.path.parent / f"{project.path.name}-run{project.runs}-artifacts"
        command = [
            str(BIN / "act"),
            event,
            "-W", f".github/workflows/{workflow}",
            "-e", str(self.event(project, event=event, inputs=inputs)),
            *[arg for key, value in (inputs or {}).items() for arg in ("--input", f"{key}={value}")],
            "-P", "ubuntu-latest=-self-hosted",
            "-P", "self-hosted=-self-hosted",
            "-P", "gpu=-self-hosted",
            "--local-repository", f"{REPOSITORY}@{RELEASE_REF}={self.mlgate}",
            *local_repository_args(REPO_ROOT / "tests" / "standins"),
            "--action-cache-path", str(self.act_cache),
            "--action-offline-mode",
            "--no-cache-server",
            "--artifact-server-addr", "127.0.0.1",
            "--artifact-server-port", str(free_port()),
            "--artifact-server-path", str(artifacts / "server"),
            "--var", f"DVC_REMOTE_URL={project.remote}",
            *(["--secret", f"MLFLOW_TRACKING_URI={self.tracking_uri}"] if self.tracking_uri else []),
            "--env", f"MLGATE_VENV_ROOT={self.venv_root}",
            "--env", f"MLGATE_STANDIN_CACHE_DIR={self.cache_dir}",
            "--env", f"MLGATE_STANDIN_ARTIFACT_DIR={artifacts}",
            "--env", "DVC_NO_ANALYTICS=1",
            *self._github_api_args(github_api),
        ]  # fmt: skip
        # A runner sees the host's toolchain, not this test session's venv.
        env = dict(self.env)
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != BIN)
        started = time.perf_counter()
        done = subprocess.run(
            command,
            cwd=project.path,
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=1500,
            check=False,
        )
        output = done.stdout + done.stderr
        # The whole log next to the run's artifacts: assertion messages show only its tail.
        (artifacts.parent / f"{artifacts.name.removesuffix('-artifacts')}.log").write_text(output, encoding="utf-8")
        return ActResult(done.returncode, output, time.perf_counter() - started, artifacts)

    @staticmethod
    def _github_api_args(github_api: GitHubApiStandin | None) -> list[str]:
        """Point the run's GitHub API at the stand-in: `--env` for GITHUB_API_URL, `--secret` for github.token.

        act 0.2.89 sets GITHUB_API_URL (and github.api_url) itself; an `--env` of the same name wins,
        in composite actions too, while the host's environment does not. `--github-instance` cannot be
        used: it always yields https://HOST/api/v3. act fills `github.token` from the GITHUB_TOKEN
        secret (and masks it in the log); it does not export GITHUB_TOKEN, the action must map it.
        """
        if github_api is None:
            return []
        return ["--env", f"GITHUB_API_URL={github_api.url}", "--secret", f"GITHUB_TOKEN={github_api.token}"]
