"""The lineage of a training run: code, data, configuration and hardware, as MLflow tags."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path

import yaml

from mlgate import __version__, gha
from mlgate.config import LoadedConfig
from mlgate.errors import InputError
from mlgate.train.device import DeviceInfo


def _git(root: Path, *args: str) -> str | None:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def data_hashes(loaded: LoadedConfig) -> dict[str, str]:
    """md5 of every output and dependency recorded in dvc.lock, by path (data and code alike).

    A project that versions data with DVC must have dvc.lock: without it a model cannot be traced
    back to its data, so its absence is an error rather than a missing tag.
    """
    root = loaded.root
    uses_dvc = (root / "dvc.yaml").is_file() or loaded.model.data.dvc
    lock = root / "dvc.lock"
    if not lock.is_file():
        if uses_dvc:
            raise InputError(
                f"{lock}: not found; the run's lineage needs the DVC hash of each data dependency",
                hint="run `dvc repro` (or `dvc commit`) and commit dvc.lock",
                file=str(lock),
            )
        return {}
    try:
        document = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(
            f"{lock}: not valid YAML: {exc}", hint="regenerate it with `dvc commit`", file=str(lock)
        ) from None
    hashes: dict[str, str] = {}
    for stage in (document.get("stages") or {}).values():
        for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
            if isinstance(entry, dict) and entry.get("path") and entry.get("md5"):
                hashes[str(entry["path"])] = str(entry["md5"])
    return hashes


def workflow_run_url() -> str | None:
    server, repo, run_id = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if not (server and repo and run_id):
        return None
    attempt = os.environ.get("GITHUB_RUN_ATTEMPT")
    return f"{server}/{repo}/actions/runs/{run_id}" + (f"/attempts/{attempt}" if attempt else "")


def lineage_tags(loaded: LoadedConfig, device: DeviceInfo, profile: str, hashes: dict[str, str]) -> dict[str, str]:
    """Every tag tying the run to what made it; `hashes` comes from `data_hashes`. Plus MLflow's mlflow.source.*."""
    root = loaded.root
    settings = loaded.model.train
    commit = os.environ.get("GITHUB_SHA") or _git(root, "rev-parse", "HEAD")
    branch = (
        os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or _git(root, "branch", "--show-current")
    )
    tags: dict[str, str | int | None] = {
        "mlflow.source.git.commit": commit,
        "mlflow.source.git.branch": branch,
        "mlflow.source.git.repoURL": os.environ.get("GITHUB_REPOSITORY")
        and (f"{os.environ.get('GITHUB_SERVER_URL', 'https://github.com')}/{os.environ['GITHUB_REPOSITORY']}"),
        "mlflow.source.type": "JOB",
        "mlflow.source.name": os.environ.get("GITHUB_WORKFLOW_REF") or "mlgate train",
        "mlgate.version": __version__,
        "mlgate.git.commit": commit,
        "mlgate.git.branch": branch,
        "mlgate.pr": gha.pr_number(),
        "mlgate.workflow_run_url": workflow_run_url(),
        "mlgate.config": str(loaded.path.name),
        "mlgate.config_sha256": hashlib.sha256(loaded.path.read_bytes()).hexdigest(),
        "mlgate.profile": profile,
        "mlgate.seed": settings.seed if settings else None,
        "mlgate.deterministic": str(settings.deterministic).lower() if settings else None,
        "mlgate.python": device.python,
        "mlgate.torch": device.torch,
        "mlgate.cuda": device.torch_cuda if device.chosen == "cuda" else None,
        "mlgate.cuda_driver": device.driver,
        "mlgate.device": device.chosen,
        "mlgate.gpu": device.gpu_name if device.chosen == "cuda" else None,
        "mlgate.gpu_count": device.device_count if device.chosen == "cuda" else None,
        "mlgate.runner": os.environ.get("RUNNER_NAME") or socket.gethostname(),
        "mlgate.runner_os": f"{platform.system()} {platform.machine()}",
    }
    for path, md5 in hashes.items():
        tags[f"mlgate.dvc.{path}"] = md5
    return {key: str(value) for key, value in tags.items() if value not in (None, "")}
