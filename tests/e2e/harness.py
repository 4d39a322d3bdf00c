"""Runs the example projects' real workflows under act, with this checkout as mlgate/mlgate@v1.

Each run goes through `mlgate.localci.run_local_ci`, the code of `mlgate ci`: the tests run what a
team runs. What is test-only stays here: a DVC remote per project, forgetting the local data so
that the jobs must pull it, and the GitHub API stand-in. A `Workbench` holds what one test session
shares: one export of this checkout (tracked and untracked-but-not-ignored files, exactly what a
push would publish), from which every project is copied and which every run resolves
mlgate/mlgate@v1 to, and the cache folder (the runner's tool cache the setup action reuses, as a
self-hosted runner keeps it, and the stand-ins' cache). A `Project` is one copy of an example
project as its own git repository (with its data pushed to a DVC remote of its own when it uses
DVC), on which a pull request is simulated.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml
from mlgate.localci import LocalCiRequest, LocalCiResult, export_tree, run_local_ci

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.github_api import GitHubApiStandin  # noqa: E402

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


# What the tests read of a run: act's exit code and output, its seconds, the artifacts folder.
ActResult = LocalCiResult

# locust's error report, as the canary prints its load's output: "<count>  POST /invocations: <error>"
LOCUST_ERROR = re.compile(r"^\s*(\d+)\s+POST /invocations: (.+?)\s*$")


def locust_errors(output: str) -> dict[str, int]:
    """The errors locust's clients saw, by kind, from its error report in a job's log (act prefixes each line
    with "[workflow/job] | "); empty when it reported none. The report must be there: its summary table is."""
    assert "Aggregated" in output, "no locust summary in the job's log"
    errors: dict[str, int] = {}
    for line in output.splitlines():
        match = LOCUST_ERROR.match(line.split("|", 1)[-1])
        if match:
            errors[match[2]] = errors.get(match[2], 0) + int(match[1])
    return errors


# The pull request every PR run simulates (the GitHub API stand-in's tests read its comment back).
PR_NUMBER = 7


class Project:
    """One copy of an example project as a git repository; its data lives in a DVC remote when it uses DVC."""

    def __init__(self, path: Path, remote: Path | None) -> None:
        self.path = path
        self.remote = remote  # None: the data is committed to git (data.dvc: false)
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
        if self.remote is None:
            return  # the data is in git: a clone has it
        for csv in (self.path / "data").glob("*.csv"):
            csv.unlink()
        shutil.rmtree(self.path / ".dvc" / "cache", ignore_errors=True)


class Workbench:
    def __init__(self, root: Path, tracking_uri: str | None = None) -> None:
        self.root = root
        self.tracking_uri = tracking_uri
        self.mlgate = export_tree(REPO_ROOT, root / "mlgate")
        self.cache_dir = root / "ci-cache"
        self.venv_root = self.cache_dir / "tool-cache"  # MLGATE_VENV_ROOT of every run (run_local_ci's layout)
        self.venv_root.mkdir(parents=True, exist_ok=True)
        self.env = _tool_env()
        self._count = 0

    def new_project(self, name: str, template: str = "example-project") -> Project:
        """A copy of `template` (a folder of this checkout) as github.com/example/<its mlgate.yaml project>."""
        self._count += 1
        path = self.root / "projects" / f"{self._count:02d}-{name}"
        shutil.copytree(self.mlgate / template, path)
        # A project with DVC ships the script that points its remote at a folder and fills it.
        uses_dvc = (path / "scripts" / "setup-dvc-remote.sh").is_file()
        remote = self.root / "remotes" / path.name if uses_dvc else None
        project = Project(path, remote)
        project.git("init", "-q", "-b", "main")
        repository = yaml.safe_load((path / "mlgate.yaml").read_text(encoding="utf-8"))["project"]
        project.git("remote", "add", "origin", f"https://github.com/example/{repository}.git")
        if remote is not None:
            _run(["bash", "scripts/setup-dvc-remote.sh", str(remote)], path, project.env)
        project.git("add", "-A")
        project.git("commit", "-q", "-m", f"{repository}: initial")
        project.git("checkout", "-q", "-b", f"pr/{name}")
        return project

    def act(
        self,
        project: Project,
        workflow: str = "pr.yml",
        event: str = "pull_request",
        inputs: dict[str, str] | None = None,
        *,
        github_api: GitHubApiStandin | None = None,
        variables: dict[str, str] | None = None,
    ) -> ActResult:
        """`mlgate ci <workflow> --event <event>` on the project, with its DVC remote as the DVC_REMOTE_URL variable."""
        project.forget_local_data()
        # Artifacts belong to one workflow run, as on GitHub: a second run of the same project starts empty.
        project.runs += 1
        env = {"DVC_NO_ANALYTICS": "1"}
        secrets: dict[str, str] = {}
        if github_api is not None:
            # act 0.2.89 sets GITHUB_API_URL (and github.api_url) itself; an `--env` of the same name
            # wins, in composite actions too, while the host's environment does not. `--github-instance`
            # cannot be used: it always yields https://HOST/api/v3. act fills `github.token` from the
            # GITHUB_TOKEN secret (and masks it in the log); it does not export GITHUB_TOKEN, the action
            # must map it.
            env["GITHUB_API_URL"] = github_api.url
            secrets["GITHUB_TOKEN"] = github_api.token
        request = LocalCiRequest(
            project=project.path,
            workflow=workflow,
            event=event,
            pr_number=PR_NUMBER,
            inputs=inputs or {},
            variables={**({"DVC_REMOTE_URL": str(project.remote)} if project.remote else {}), **(variables or {})},
            secrets=secrets,
            env=env,
            tracking_uri=self.tracking_uri,
            mlgate_tree=self.mlgate,
            # Next to the project, not in it: act copies the project into every job's workspace.
            out_dir=project.path.parent / f"{project.path.name}-run{project.runs}",
            cache_dir=self.cache_dir,
            host_env=self.env,
            timeout_s=1500,
        )
        return run_local_ci(request)


# What `mlgate train` prints of the model it logged, as a user copies it into the next command.
MODEL_URI = re.compile(r"model-uri[=: ]+(models:/m-\w+)")


def by_hand_env(workbench: Workbench, project: Project) -> dict[str, str]:
    """The environment of gates run by hand in `project` (not under act): its venvs in the workbench's tool cache,
    which the act runs build and reuse, the DVC remote its setup script fills, no tracking URI or token."""
    env = dict(project.env)
    env["MLGATE_VENV_ROOT"] = str(workbench.venv_root)
    if project.remote is not None:
        env["DVC_REMOTE_URL"] = str(project.remote)  # setup-dvc-remote.sh's remote, without its argument
    for name in ("MLFLOW_TRACKING_URI", "GITHUB_TOKEN"):
        env.pop(name, None)
    return env


def by_hand(project: Project, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One shell-quoted command line run in the project, `mlgate` being this checkout's."""
    argv = shlex.split(command)
    if argv[0] == "mlgate":
        argv[0] = str(BIN / "mlgate")
    return subprocess.run(argv, cwd=project.path, env=env, capture_output=True, text=True, check=False, timeout=900)
