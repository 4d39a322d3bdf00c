"""The argument helpers the command modules share: action inputs as defaults, and the options several gates take.

An action passes its inputs as MLGATE_INPUT_<NAME> variables; each option reads its default from there, so
`mlgate <gate>` on a laptop and the composite action on a runner parse the same values.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from mlgate.errors import InputError


def env_default(name: str, fallback: str | None = None) -> str | None:
    """An action input passed as MLGATE_INPUT_<NAME>; empty means not given."""
    value = os.environ.get(f"MLGATE_INPUT_{name.upper().replace('-', '_')}", "")
    return value if value != "" else fallback


def flag_default(name: str) -> bool | None:
    """A boolean action input (`true`/`false`); None when not given, so the config decides."""
    value = env_default(name)
    if value is None:
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=env_default("config", "mlgate.yaml"), help="path of mlgate.yaml")


def add_tracking_argument(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri, shared by the gates that talk to MLflow."""
    parser.add_argument(
        "--tracking-uri",
        default=env_default("tracking-uri") or os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI); e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db",
    )


def require_output(option: str, value: str | Path, *, folder: bool = False) -> Path:
    """`value`, a file (or with `folder` a folder) the gate will write, checked before the gate does its work.

    Missing folders are fine (the gate creates them) where the nearest existing one is a writable
    folder; a file where a folder must be, a folder where the file must be, or an unwritable place
    is an InputError naming the option, so nothing is trained or validated only to fail at writing.
    """
    path = Path(value)
    kind = "folder" if folder else "file"

    def refuse(problem: str) -> NoReturn:
        raise InputError(
            f"{option} {path}: {problem}",
            hint=f"pass {option} a {kind} path in a folder this user can write (missing folders are created)",
        )

    if path.exists():
        if folder and not path.is_dir():
            refuse("is a file, not a folder")
        if not folder and path.is_dir():
            refuse("is a folder; name a file (in it)")
        if not os.access(path, os.W_OK):
            refuse(f"the {kind} is not writable")
        return path
    nearest = path.absolute().parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        refuse(f"{nearest} is a file, so the {kind} cannot be created under it")
    if not os.access(nearest, os.W_OK | os.X_OK):
        refuse(f"cannot create the {kind}: {nearest} is not writable")
    return path


def add_outputs_argument(parser: argparse.ArgumentParser, default: str, holds: str) -> None:
    """--outputs-file, shared by the gates whose outputs a local run reads from a file (`default`: in the project)."""
    parser.add_argument(
        "--outputs-file",
        default=env_default("outputs-file"),
        help=f"JSON file of the outputs ({holds}, ...); default: {default} in the project",
    )


def outputs_path(args: argparse.Namespace, project_root: Path, default: str) -> Path:
    """The --outputs-file given, else `default` under the project root; checked as require_output does."""
    return require_output("--outputs-file", args.outputs_file or project_root / default)


def require_tracking_uri(uri: str | None) -> str:
    if not uri:
        raise InputError(
            "no MLflow tracking URI given",
            hint="pass the tracking-uri input (from a secret or variable), --tracking-uri, or set MLFLOW_TRACKING_URI; "
            "for a local file store use sqlite:///mlflow.db",
        )
    return uri


def add_candidate_argument(parser: argparse.ArgumentParser) -> None:
    """--model: the candidate (the train step's model-uri output), from the action's model-uri input."""
    parser.add_argument(
        "--model",
        default=env_default("model-uri") or os.environ.get("MLGATE_CANDIDATE"),
        help="URI of the candidate model, e.g. models:/<model_id> (the train step's model-uri output)",
    )


def add_on_off_arguments(parser: argparse.ArgumentParser, name: str, on_help: str, off_help: str | None = None) -> None:
    """--<name> / --no-<name>, on unless the action's <name> input is `false`."""
    pair = parser.add_mutually_exclusive_group()
    dest = name.replace("-", "_")
    pair.add_argument(f"--{name}", dest=dest, action="store_true", default=flag_default(name) is not False,
                      help=on_help)  # fmt: skip
    pair.add_argument(f"--no-{name}", dest=dest, action="store_false", help=off_help)


def add_comment_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--comment / --no-comment, from the action's comment input (default on)."""
    add_on_off_arguments(parser, "comment", f"{what} (on pull requests, with GITHUB_TOKEN; default)")


def add_dvc_arguments(parser: argparse.ArgumentParser) -> None:
    """--dvc-remote-url and --no-dvc-pull, shared by the gates that read DVC-versioned data."""
    parser.add_argument(
        "--dvc-remote-url",
        default=env_default("dvc-remote-url"),
        help="DVC remote for this run, set in the local (uncommitted) DVC config before the pull",
    )
    parser.add_argument(
        "--no-dvc-pull",
        action="store_true",
        default=flag_default("dvc-pull") is False,
        help="do not run `dvc pull` even when data.dvc is true",
    )


def add_operation_argument(
    parser: argparse.ArgumentParser, operations: tuple[str, ...], help: str | None = None
) -> None:
    """The operation positional of a command with several (`mlgate registry promote`), from the operation input."""
    parser.add_argument("operation", nargs="?", default=env_default("operation"), choices=operations, help=help)


def require_operation(args: argparse.Namespace, command: str, operations: tuple[str, ...]) -> str:
    """The operation given, or an InputError listing them: an action may leave its operation input empty."""
    if args.operation is None:
        raise InputError(f"no {command} operation given", hint=f"one of: {', '.join(operations)}")
    return str(args.operation)
