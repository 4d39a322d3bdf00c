"""The `mlgate` command: one subcommand per gate, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from mlgate import __version__, gha
from mlgate.errors import InputError, MlgateError
from mlgate.extras import run_gate

# subcommand -> module under mlgate.commands; imported lazily so `mlgate lint` never loads pandas.
COMMANDS: dict[str, tuple[str, str]] = {
    "schema": ("schema", "print the JSON Schema of mlgate.yaml"),
    "check": ("check", "check mlgate.yaml and the files, columns and profiles it names, in a second"),
    "lint": ("lint", "ruff check, ruff format --check and mypy on the model project"),
    "validate-data": ("validate_data", "Great Expectations suite, drift and leakage checks on the data"),
    "train": ("train", "train the model in the project venv, tracked in MLflow with lineage"),
    "test-model": ("test_model", "behavioral, performance and baseline checks of a candidate model, under pytest"),
    "ci": ("ci", "run the repository's workflows on this machine under act, with local stand-ins and MLflow"),
}


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


def require_tracking_uri(uri: str | None) -> str:
    if not uri:
        raise InputError(
            "no MLflow tracking URI given",
            hint="pass the tracking-uri input (from a secret or variable), --tracking-uri, or set MLFLOW_TRACKING_URI; "
            "for a local file store use sqlite:///mlflow.db",
        )
    return uri


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


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(prog="mlgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlgate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runners: dict[str, Callable[[argparse.Namespace], int]] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = import_module(f"mlgate.commands.{module_name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        runners[name] = module.run
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        # A missing optional dependency (a gate whose extra is not installed) becomes a ToolError here.
        return run_gate(args.command, runners[args.command], args)
    except MlgateError as exc:
        gha.annotation("error", exc.message, file=exc.file, line=exc.line, title=f"mlgate {args.command}")
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
