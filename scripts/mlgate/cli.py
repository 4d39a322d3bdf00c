"""The `mlgate` command: one subcommand per gate, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from mlgate import __version__, gha, mlflowio, redaction
from mlgate.errors import InputError, MlgateError
from mlgate.extras import run_gate

# subcommand -> module under mlgate.commands; imported lazily so `mlgate lint` never loads pandas.
COMMANDS: dict[str, tuple[str, str]] = {
    "schema": ("schema", "print the JSON Schema of mlgate.yaml"),
    "check": ("check", "check mlgate.yaml and the files, columns and profiles it names, in a second"),
    "env": ("env", "the model project's venv for a CI cache: its key and path, and a check or build of it"),
    "lint": ("lint", "ruff check, ruff format --check and mypy on the model project"),
    "validate-data": ("validate_data", "Great Expectations suite, drift and leakage checks on the data"),
    "train": ("train", "train the model in the project venv, tracked in MLflow with lineage"),
    "test-model": ("modeltest", "behavioral, performance and baseline checks of a candidate model, under pytest"),
    "compress": ("compress", "smaller, faster ONNX variants of a candidate (INT8, pruned, distilled), re-tested"),
    "registry": ("registry", "register, promote, rollback, status and history of the registered model (aliases)"),
    "ci": ("ci", "run the repository's workflows on this machine under act, with local stand-ins and MLflow"),
    "github": ("github", "set up the model repository on GitHub: deployment environment and required PR checks"),
    "serve": ("serve", "serve one MLflow model over HTTP: MLflow's /invocations, /predict, /ready, /metrics"),
    "traffic": ("traffic", "split traffic between a stable and a canary model: up, set, status, down"),
    "rollout": ("rollout", "staged canary of a registered version against @champion: start, status, abort"),
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


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error exiting 3 (bad input) rather than 2, which means a bad mlgate.yaml."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(InputError.exit_code, f"{self.prog}: error: {message}\nhint: see `{self.prog} --help`\n")


def build_parser(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    """The parser and each subcommand's runner. Given `argv`, only the module of the subcommand it names is
    imported (the others are listed by their help alone): about 0.1 s of every call, which CI pays in each job."""
    parser = Parser(prog="mlgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlgate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runners: dict[str, Callable[[argparse.Namespace], int]] = {}
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if chosen is None or name == chosen:
            module = import_module(f"mlgate.commands.{module_name}")
            module.add_arguments(sub)
            runners[name] = module.run
    return parser, runners


def _redacted_excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    # An unexpected failure's traceback may quote a URI or a token; it is redacted like any other output.
    stream = sys.__stderr__ or sys.stderr
    stream.write(redaction.redact("".join(traceback.format_exception(kind, value, tb))))


def register_secrets(args: argparse.Namespace) -> None:
    """Register the URIs this run was given, before the gate could print one (the environment's secrets
    are registered when main starts, before parsing; mlgate.redaction)."""
    for name in ("tracking_uri", "dvc_remote_url"):
        value = getattr(args, name, None)
        if isinstance(value, str):
            redaction.register_uri(value)


def main(argv: Sequence[str] | None = None) -> int:
    # Registered and wrapped before parsing: argparse's own errors may echo an argument.
    redaction.register_environment()
    sys.excepthook = _redacted_excepthook
    mlflowio.no_telemetry()  # before any gate imports MLflow (mlflowio.TELEMETRY_ENV)
    # Every print of every module (and the children's output procio relays) passes the redaction layer.
    stdout, stderr = sys.stdout, sys.stderr
    redacted_stdout, redacted_stderr = redaction.wrap(stdout), redaction.wrap(stderr)
    sys.stdout, sys.stderr = redacted_stdout, redacted_stderr
    command = "?"
    try:
        arguments = sys.argv[1:] if argv is None else list(argv)
        parser, runners = build_parser(arguments)
        args = parser.parse_args(arguments)
        command = args.command
        register_secrets(args)
        # A missing optional dependency (a gate whose extra is not installed) becomes a ToolError here.
        return run_gate(command, runners[command], args)
    except MlgateError as exc:
        gha.annotation("error", exc.message, file=exc.file, line=exc.line, title=f"mlgate {command}")
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)  # stderr is the redacting wrapper
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        redacted_stdout.flush()
        redacted_stderr.flush()
        sys.stdout, sys.stderr = stdout, stderr


if __name__ == "__main__":
    sys.exit(main())
