"""The `mlgate` command: one subcommand per gate, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import import_module
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


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error exiting 3 (bad input) rather than 2, which means a bad mlgate.yaml."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(InputError.exit_code, f"{self.prog}: error: {message}\nhint: see `{self.prog} --help`\n")


# What `mlgate --help` opens with: for the person at the terminal, not this module's docstring.
DESCRIPTION = (
    "Run the gates of an ML model's delivery path: lint, data validation, training, model tests, compression, "
    "the model registry, serving, traffic and the staged canary. mlgate's GitHub Actions run these same "
    "commands, so a gate gives the same answer on a laptop as in CI."
)
EPILOG = "Start with `mlgate check` in the model project (the folder of mlgate.yaml); then `mlgate COMMAND --help`."


def build_parser(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    """The parser and each subcommand's runner. Given `argv`, only the module of the subcommand it names is
    imported (the others are listed by their help alone): about 0.1 s of every call, which CI pays in each job."""
    parser = Parser(prog="mlgate", description=DESCRIPTION, epilog=EPILOG)
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
