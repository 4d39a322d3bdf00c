"""`mlgate env`: the model project's venv (`environment.install`) for a CI cache.

    mlgate env key      # where the venv lives and its cache key (outputs: needed, path, key, use-cache, present,
                        # mypy-cache-path, mypy-cache-key)
    mlgate env ensure   # check a venv (one restored from a cache), build it when missing or broken (output: built)

`actions/project-env` runs `key`, restores the path from actions/cache under the key, runs `ensure`, and
saves the path under the key when `ensure` built it. The gates find the venv ready.
"""

from __future__ import annotations

import argparse
import os

from mlgate import gha
from mlgate.commands.arguments import (
    add_config_argument,
    add_on_off_arguments,
    add_operation_argument,
    env_default,
    require_operation,
)
from mlgate.config import load_config
from mlgate.errors import InputError

OPERATIONS = ("key", "ensure")
CACHE_CHOICES = ("auto", "true", "false")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_operation_argument(parser, OPERATIONS)
    add_config_argument(parser)
    add_on_off_arguments(
        parser,
        "check",
        "ensure: check a venv that is there (default: one just restored from a cache may be half valid)",
        "ensure: trust a venv that is there",
    )
    parser.add_argument(
        "--cache",
        default=env_default("cache", "auto"),
        help="key: whether the venv may come from a CI cache: auto (yes, except on tag and release events), "
        "true, false",
    )


def use_cache(choice: str) -> bool:
    """Release and tag builds never read a cache another ref could have written (cache poisoning)."""
    if choice not in CACHE_CHOICES:
        raise InputError(f"--cache {choice!r} is not one of {', '.join(CACHE_CHOICES)}", hint="use auto, true or false")
    if choice != "auto":
        return choice == "true"
    return os.environ.get("GITHUB_REF_TYPE") != "tag" and os.environ.get("GITHUB_EVENT_NAME") != "release"


def run(args: argparse.Namespace) -> int:
    from mlgate import projenv

    require_operation(args, "env", OPERATIONS)
    loaded = load_config(args.config)
    needed = bool(loaded.model.environment.install)
    if args.operation == "key":
        cached = needed and use_cache(args.cache)
        venv = projenv.venv_path(loaded)
        key = projenv.cache_key(loaded) if needed else ""
        # Already on this runner (a self-hosted runner's tool cache): nothing to restore.
        present = needed and projenv.is_built(venv)
        outputs = {"needed": needed, "path": str(venv) if needed else "", "key": key, "use-cache": cached}
        # Where `mlgate lint` keeps mypy's cache next to this venv, and that cache's own CI key (actions/lint).
        outputs |= {
            "mypy-cache-path": str(projenv.mypy_cache_dir(venv / "bin" / "python")) if needed else "",
            "mypy-cache-key": projenv.mypy_cache_key(key) if needed else "",
        }
        gha.set_outputs({name: str(value).lower() if isinstance(value, bool) else value for name, value in
                         (outputs | {"present": present}).items()})  # fmt: skip
        if needed:
            where = "already on this runner" if present else ("cache used" if cached else "cache not used")
            print(f"mlgate env: the project venv is {venv} ({where}); cache key {key}")
        else:
            print("mlgate env: the project declares no environment.install: no project venv")
        return 0
    if not needed:
        gha.set_outputs({"built": "false", "python": ""})
        print("mlgate env: the project declares no environment.install: nothing to build")
        return 0
    marker = projenv.venv_path(loaded) / projenv.MARKER
    before = marker.stat().st_mtime_ns if marker.is_file() else None
    with gha.group("project environment (environment.install)"):
        python = projenv.ensure_project_env(loaded, check=args.check)
    after = marker.stat().st_mtime_ns if marker.is_file() else None
    built = before is None or after != before
    gha.set_outputs({"built": str(built).lower(), "python": str(python or "")})
    state = "built here" if built else ("there, checked" if args.check else "there")
    print(f"mlgate env: the project venv is ready ({state}): {python}")
    return 0
