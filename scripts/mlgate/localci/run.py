"""Run a repository's own workflows on this machine under act, with mlgate's stand-ins and a local MLflow server.

`run_local_ci` is what `mlgate ci`, `make demo` and the end-to-end tests call: it checks the
request (a git repository, the workflow, a copy of mlgate's repository, act) before it writes
anything, then exports mlgate into the run's folder, starts MLflow when no tracking URI is given,
writes the event payload from git, and runs act with every action served offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import mlgate
from mlgate import RELEASE_REF, REPOSITORY
from mlgate.errors import InputError, ToolError
from mlgate.localci.act import (
    ActSpec,
    ErrorAnnotation,
    act_command,
    error_annotations,
    find_act,
    host_environment,
    job_results,
    run_act,
)
from mlgate.localci.mlflow_server import INSTALL_HINT, MlflowServer, find_mlflow
from mlgate.statefile import free_port
from mlgate.yamlio import load_yaml_file

DEFAULT_EVENT = "pull_request"
WORKFLOWS_DIR = Path(".github") / "workflows"
# What a copy of mlgate's repository must hold for `mlgate/mlgate/...@v1` to resolve in it.
SOURCE_MARKERS = ("action.yml", "setup/setup.sh", ".github/workflows/ml-ci.yml")
SOURCE_HINT = (
    f"the installed package has no action.yml files: clone mlgate at the release "
    f"(git clone --branch {RELEASE_REF} https://github.com/{REPOSITORY}) and pass --mlgate-source <that folder> "
    "or set MLGATE_SOURCE"
)
# Left out when a copy of mlgate that is not a git checkout (an unpacked release archive) is exported.
_NOT_PUBLISHED = (".git", ".venv", "venv", "__pycache__", "*.egg-info", "build", ".mypy_cache", ".ruff_cache")


@dataclass(frozen=True)
class LocalCiRequest:
    """One local run of a repository's workflows, as `mlgate ci` takes it."""

    project: Path  # any folder inside the model project's git repository
    workflow: str | None = None  # a file name (pr.yml), a path; None: every workflow `event` triggers
    event: str = DEFAULT_EVENT
    pr_number: int = 1  # of the pull_request payload
    base_ref: str = "main"  # the pull request's base branch
    inputs: Mapping[str, str] = field(default_factory=dict)  # workflow_dispatch inputs
    variables: Mapping[str, str] = field(default_factory=dict)  # `vars.*`
    secrets: Mapping[str, str] = field(default_factory=dict)  # `secrets.*`
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment of every step
    tracking_uri: str | None = None  # None (and no MLFLOW_TRACKING_URI secret): a local server for this run
    mlgate_source: Path | None = None  # None: MLGATE_SOURCE, else the checkout this package runs from
    mlgate_tree: Path | None = None  # an export of mlgate already made (shared by several runs); skips the export
    out_dir: Path | None = None  # the run's folder; None: a new one under the temp folder
    cache_dir: Path | None = None  # the runner's tool cache and the stand-ins' cache; None: ~/.cache/mlgate/ci
    host_env: Mapping[str, str] | None = None  # the environment act starts from; None: this process's
    timeout_s: float | None = None


@dataclass(frozen=True)
class LocalCiRun:
    """What a run is about to do: known once its folder, mlgate's export and MLflow are ready."""

    project: Path
    workflows: tuple[Path, ...]
    event: str
    run_dir: Path
    artifacts: Path  # what the workflow's upload-artifact steps wrote, one folder per artifact name
    log: Path  # act's whole output
    mlgate_source: Path | None  # None when the caller gave an export
    mlgate_tree: Path
    tracking_uri: str
    mlflow_store: Path | None  # the sqlite file of the server this run started; None for a given URI
    cache_dir: Path  # the runner's tool cache and the stand-ins' cache, kept across runs
    command: tuple[str, ...]


@dataclass(frozen=True)
class LocalCiResult:
    run: LocalCiRun
    returncode: int  # act's
    output: str
    seconds: float
    jobs: dict[str, str]  # act's job name -> "succeeded" | "failed", in the order they ended
    errors: tuple[ErrorAnnotation, ...]  # the `::error` annotations the steps printed

    @property
    def artifacts(self) -> Path:
        return self.run.artifacts

    @property
    def log(self) -> Path:
        return self.run.log

    @property
    def failed_jobs(self) -> list[str]:
        return [job for job, result in self.jobs.items() if result == "failed"]


@dataclass(frozen=True)
class GitState:
    root: Path
    head: str
    branch: str  # empty on a detached HEAD
    repository: str  # owner/name from the origin remote, else local/<folder>


# --------------------------------------------------------------------------- the project


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("git") is None:
        raise ToolError("git is not installed", hint="install git: act reads the commit and branch of the run from it")
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def git_state(start: Path) -> GitState:
    """The repository `start` is in, its HEAD commit, branch and GitHub name."""
    if not start.is_dir():
        raise InputError(f"{start} is not a folder")
    top = _git(start, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise InputError(
            f"{start.resolve()} is not inside a git repository",
            hint="act runs the workflows of a commit: run from your clone, or `git init && git add -A && git commit`",
        )
    root = Path(top.stdout.strip())
    head = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    if head.returncode != 0:
        raise InputError(f"{root} has no commit yet", hint="commit once: act runs the workflows of a commit")
    branch = _git(root, "branch", "--show-current").stdout.strip()
    origin = _git(root, "remote", "get-url", "origin").stdout.strip()
    match = re.search(r"github\.com[:/](?P<name>[^/\s]+/[^/\s]+?)(?:\.git)?/?$", origin)
    repository = match["name"] if match else f"local/{root.name}"
    return GitState(root, head.stdout.strip(), branch, repository)


def workflow_files(root: Path) -> list[Path]:
    folder = root / WORKFLOWS_DIR
    return sorted(path for pattern in ("*.yml", "*.yaml") for path in folder.glob(pattern) if path.is_file())


def workflow_events(path: Path) -> list[str]:
    """The events in a workflow's `on:` (YAML 1.1 reads the key `on` as True)."""
    document = load_yaml_file(path, InputError, what="not a readable workflow: ").data
    if not isinstance(document, dict):
        raise InputError(f"{path}: not a workflow (no mapping at the top)", file=str(path))
    triggers: Any = document.get("on", document.get(True))
    if isinstance(triggers, str):
        return [triggers]
    if isinstance(triggers, list | dict):
        return [str(name) for name in triggers]
    return []


def _listing(root: Path) -> str:
    found = workflow_files(root)
    if not found:
        return f"{root} has no workflows in {WORKFLOWS_DIR}/"
    described = [f"{path.name} ({', '.join(workflow_events(path)) or 'no triggers'})" for path in found]
    return f"the workflows of {root / WORKFLOWS_DIR}: " + ", ".join(described)


def _find_workflow(root: Path, name: str, cwd: Path) -> Path:
    given = Path(name).expanduser()
    if given.is_absolute():
        candidates = [given]
    else:
        bases = [cwd, root, root / WORKFLOWS_DIR]
        candidates = [base / given for base in bases]
        if given.suffix not in (".yml", ".yaml"):
            candidates += [root / WORKFLOWS_DIR / f"{name}{suffix}" for suffix in (".yml", ".yaml")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    # A bare name is looked for where GitHub reads workflows; a path, where it points.
    expected = given if given.is_absolute() else (cwd / given if len(given.parts) > 1 else root / WORKFLOWS_DIR / given)
    raise InputError(f"workflow {name}: {expected} does not exist", hint=_listing(root))


def select_workflows(root: Path, name: str | None, event: str, cwd: Path) -> tuple[Path, ...]:
    """The workflow asked for, or every workflow of the repository that `event` triggers."""
    if name is not None:
        path = _find_workflow(root, name, cwd)
        events = workflow_events(path)
        if event not in events:
            raise InputError(
                f"{path.name} does not run on {event} (its triggers: {', '.join(events) or 'none'})",
                hint=f"pass --event {events[0]}" if events else "add an `on:` block to the workflow",
            )
        return (path,)
    matching = tuple(path.resolve() for path in workflow_files(root) if event in workflow_events(path))
    if not matching:
        raise InputError(f"no workflow of {root} runs on {event}", hint=_listing(root))
    return matching


def event_payload(
    event: str, git: GitState, *, pr_number: int, base_ref: str, inputs: Mapping[str, str]
) -> dict[str, Any]:
    """The webhook payload act hands the run: the fields mlgate's gates and act's own context read."""
    repository = {"full_name": git.repository, "name": git.repository.rpartition("/")[2]}
    head_ref = git.branch or git.head
    if event == "pull_request":
        return {
            "action": "synchronize",
            "number": pr_number,
            "pull_request": {
                "number": pr_number,
                "head": {"ref": head_ref, "sha": git.head},
                "base": {"ref": base_ref},
            },
            "repository": repository,
        }
    payload: dict[str, Any] = {"ref": f"refs/heads/{head_ref}", "after": git.head, "repository": repository}
    if event == "workflow_dispatch":
        payload["inputs"] = dict(inputs)
    return payload


# --------------------------------------------------------------------------- mlgate's repository


def _is_mlgate_source(folder: Path) -> bool:
    return all((folder / marker).is_file() for marker in SOURCE_MARKERS)


def package_checkout() -> Path | None:
    """The repository this package is installed from in development (`pip install -e`), if it is one."""
    root = Path(mlgate.__file__).resolve().parents[2]  # <root>/scripts/mlgate/__init__.py
    return root if _is_mlgate_source(root) else None


def find_mlgate_source(explicit: Path | None, env: Mapping[str, str]) -> Path:
    """--mlgate-source, else MLGATE_SOURCE, else the checkout the running package lives in."""
    for given, origin in ((explicit, "--mlgate-source"), (env.get("MLGATE_SOURCE") or None, "MLGATE_SOURCE")):
        if given is None:
            continue
        folder = Path(given).expanduser().resolve()
        missing = [marker for marker in SOURCE_MARKERS if not (folder / marker).is_file()]
        if missing:
            raise InputError(
                f"{origin} {folder} is not a copy of mlgate's repository (no {', '.join(missing)})", hint=SOURCE_HINT
            )
        return folder
    found = package_checkout()
    if found is None:
        raise InputError(f"no copy of mlgate's repository to serve {REPOSITORY}@{RELEASE_REF} from", hint=SOURCE_HINT)
    return found


def export_tree(source: Path, dest: Path) -> Path:
    """Copy what a push of `source` would publish (tracked + untracked-not-ignored files) into `dest`.

    act then reads mlgate's actions from `dest`: the checkout itself is never written to, and a
    venv or build folder in it never reaches a job. A copy that is not a git checkout (an unpacked
    release) is copied whole, less the usual local folders.
    """
    dest.mkdir(parents=True, exist_ok=True)
    listing = _git(source, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listing.returncode != 0:
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*_NOT_PUBLISHED), dirs_exist_ok=True)
        return dest
    for name in filter(None, listing.stdout.split("\0")):
        origin = source / name
        if not origin.is_file():  # deleted in the working tree but still in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, target)
    return dest


# --------------------------------------------------------------------------- folders


def default_cache_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlgate" / "ci"


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_outside(path: Path, what: str, project: Path, source: Path | None) -> None:
    if _inside(path, project):
        raise InputError(
            f"{what} {path} is inside the repository {project}",
            hint="act copies the repository into every job's workspace: choose a folder outside it",
        )
    if source is not None and _inside(path, source):
        raise InputError(f"{what} {path} is inside mlgate's checkout {source}", hint="choose a folder outside it")


def _new_run_dir(out_dir: Path | None, project: Path) -> Path:
    if out_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(tempfile.mkdtemp(prefix=f"mlgate-ci-{project.name}-{stamp}-"))
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(
            f"{out_dir} already holds files",
            hint="name a new folder: artifacts belong to one run, as on GitHub (a second upload of a name fails)",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir.resolve()


# --------------------------------------------------------------------------- the run


def run_local_ci(
    request: LocalCiRequest,
    *,
    echo: TextIO | None = None,
    on_ready: Callable[[LocalCiRun], None] | None = None,
) -> LocalCiResult:
    """Run the request's workflows under act; act's exit code and output, the jobs' results and where all went.

    Every check that can fail on bad input runs before anything is written. `echo` gets act's
    output as it comes; `on_ready` is called once, just before act starts.
    """
    env = dict(os.environ if request.host_env is None else request.host_env)
    cwd = request.project.expanduser().resolve()
    git = git_state(cwd)
    workflows = select_workflows(git.root, request.workflow, request.event, cwd)
    # A caller that runs many workflows (the end-to-end tests) exports mlgate once and passes the export.
    mlgate_folder = request.mlgate_tree or find_mlgate_source(request.mlgate_source, env)
    source = None if request.mlgate_tree is not None else mlgate_folder
    act_env = host_environment(env)
    act = find_act(act_env)
    cache_dir = (request.cache_dir or default_cache_dir(env)).expanduser()
    _check_outside(cache_dir, "the cache folder", git.root, source)
    if request.out_dir is not None:
        _check_outside(request.out_dir.expanduser(), "the run folder", git.root, source)
    tracking_uri = request.tracking_uri or request.secrets.get("MLFLOW_TRACKING_URI")
    if not tracking_uri and find_mlflow() is None:
        raise ToolError("the local MLflow server needs the `mlflow` package, which is not installed", hint=INSTALL_HINT)

    run_dir = _new_run_dir(request.out_dir.expanduser() if request.out_dir else None, git.root)
    tool_cache, standin_cache = cache_dir / "tool-cache", cache_dir / "standin-cache"
    for folder in (tool_cache, standin_cache):
        folder.mkdir(parents=True, exist_ok=True)
    tree = mlgate_folder if source is None else export_tree(source, run_dir / "mlgate")
    event_path = run_dir / "event.json"
    payload = event_payload(
        request.event, git, pr_number=request.pr_number, base_ref=request.base_ref, inputs=request.inputs
    )
    event_path.write_text(json.dumps(payload, indent=2), encoding="utf-8")

    with ExitStack() as stack:
        store = None
        if not tracking_uri:
            server = stack.enter_context(MlflowServer(run_dir / "mlflow"))
            tracking_uri, store = server.uri, server.store
        spec = ActSpec(
            act=act,
            event=request.event,
            workflows=workflows[0] if len(workflows) == 1 else git.root / WORKFLOWS_DIR,
            event_path=event_path,
            mlgate_tree=tree,
            artifacts=run_dir / "artifacts",
            artifact_server=run_dir / "act-artifact-server",
            artifact_port=free_port(),
            action_cache=run_dir / "act",
            tool_cache=tool_cache.resolve(),
            standin_cache=standin_cache.resolve(),
            tracking_uri=tracking_uri,
            inputs=request.inputs,
            variables=request.variables,
            secrets=request.secrets,
            env=request.env,
        )
        command = act_command(spec)
        run = LocalCiRun(
            project=git.root,
            workflows=workflows,
            event=request.event,
            run_dir=run_dir,
            artifacts=spec.artifacts,
            log=run_dir / "act.log",
            mlgate_source=source,
            mlgate_tree=tree,
            tracking_uri=tracking_uri,
            mlflow_store=store,
            cache_dir=cache_dir.resolve(),
            command=tuple(command),
        )
        # For a person who wants to rerun or change it by hand; secrets stay out of files.
        (run_dir / "act-command.txt").write_text(redacted_command(run) + "\n", encoding="utf-8")
        if on_ready is not None:
            on_ready(run)
        outcome = run_act(command, git.root, act_env, run.log, echo=echo, timeout_s=request.timeout_s)
    return LocalCiResult(
        run,
        outcome.returncode,
        outcome.output,
        outcome.seconds,
        job_results(outcome.output),
        tuple(error_annotations(outcome.output)),
    )


def redacted_command(run: LocalCiRun) -> str:
    """The act command as a person may see it: secret values hidden."""
    shown: list[str] = []
    hide_next = False
    for part in run.command:
        if hide_next:
            part = part.partition("=")[0] + "=***"
        hide_next = part == "--secret"
        shown.append(part)
    return " ".join(shown)
