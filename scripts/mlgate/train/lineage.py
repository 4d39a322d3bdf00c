"""The lineage of a training run: code, data, configuration and hardware, as MLflow tags."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path

from mlgate import __version__, gha, redaction
from mlgate.config import LoadedConfig
from mlgate.errors import InputError
from mlgate.train.device import DeviceInfo
from mlgate.yamlio import load_yaml_file


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
    # The safe loader: duplicate keys, alias bombs and deep nesting are errors; no message quotes the file.
    document = (
        load_yaml_file(
            lock,
            InputError,
            max_bytes=DVC_LOCK_MAX_BYTES,
            file_hint="regenerate it with `dvc commit`",
            also="; or regenerate it with `dvc commit`",
        ).data
        or {}
    )
    return lock_hashes(lock, document)


# dvc.lock grows with the stages and files it records; a few megabytes is already thousands of entries.
DVC_LOCK_MAX_BYTES = 16 << 20


# Besides md5, DVC records an out that lives in a cloud as its etag, checksum or version id.
OUT_HASH_KEYS = ("md5", "etag", "checksum", "version_id")


def lock_hashes(lock: Path, document: object) -> dict[str, str]:
    """The md5 by path of a parsed dvc.lock, or an InputError naming the key whose shape is wrong.

    A dependency needs only a path (one imported from a Git repository has no hash); an output
    needs a path and a hash.
    """

    def wrong(key: str, problem: str) -> InputError:
        return InputError(
            f"{lock}: {key} {problem}",
            hint="dvc.lock is written by DVC: regenerate it with `dvc repro` or `dvc commit` instead of editing it",
            file=str(lock),
        )

    def kind(value: object) -> str:
        names = {"dict": "a mapping", "list": "a list", "str": "a string", "NoneType": "empty"}
        return names.get(type(value).__name__, type(value).__name__)

    if not isinstance(document, dict):
        raise wrong("the top level", f"is {kind(document)}, not a mapping with `schema` and `stages`")
    stages = document.get("stages") or {}
    if not isinstance(stages, dict):
        raise wrong("`stages`", f"is {kind(stages)}, not a mapping of stage names to stages")
    hashes: dict[str, str] = {}
    for name, stage in stages.items():
        if not isinstance(stage, dict):
            raise wrong(f"`stages.{name}`", f"is {kind(stage)}, not a mapping with `cmd`, `deps` and `outs`")
        for field in ("deps", "outs"):
            entries = stage.get(field) or []
            if not isinstance(entries, list):
                raise wrong(f"`stages.{name}.{field}`", f"is {kind(entries)}, not a list of entries with `path`")
            for index, entry in enumerate(entries):
                key = f"`stages.{name}.{field}[{index}]`"
                if not isinstance(entry, dict):
                    raise wrong(key, f"is {kind(entry)}, not a mapping with `path` and `md5`")
                path = entry.get("path")
                if not isinstance(path, str) or not path:
                    raise wrong(key, "has no `path`")
                md5 = entry.get("md5")
                if field == "outs" and not any(entry.get(hash_key) for hash_key in OUT_HASH_KEYS):
                    raise wrong(key, f"({path}) has no `md5`: the run's lineage needs the hash of each output")
                if isinstance(md5, str | int) and not isinstance(md5, bool) and md5 != "":
                    hashes[path] = str(md5)
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
    # Tags are read by anyone who can read the experiment: a value from the environment or git (a server
    # URL or branch name carrying a token) is redacted like any output.
    return {key: redaction.redact(str(value)) for key, value in tags.items() if value not in (None, "")}
