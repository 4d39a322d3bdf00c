"""`mlgate check`: report every problem of mlgate.yaml and of what it names, each at its file and line."""

from __future__ import annotations

import argparse

from mlgate import gha
from mlgate.commands.arguments import add_config_argument
from mlgate.errors import ConfigError, InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def run(args: argparse.Namespace) -> int:
    from mlgate.check import check_config

    report = check_config(args.config)
    for problem in report.problems:
        gha.annotation(problem.level, problem.message, file=problem.file, line=problem.line, title="mlgate check")
    errors, warnings = report.errors, report.warnings
    shown = gha.cwd_relative(str(report.config))
    if errors:
        kinds = {problem.kind for problem in errors}
        # A wrong mlgate.yaml (exit 2) is fixed before the files it names can be judged (exit 3).
        failure = ConfigError if "config" in kinds else InputError
        also = f" and {_counted(len(warnings), 'warning')}" if warnings else ""
        raise failure(
            f"mlgate check: {_counted(len(errors), 'error')}{also} in {shown} and what it names",
            hint="fix each at the file and line above, then run `mlgate check` again",
        )
    checked = [
        _counted(report.sources, "source header"),
        _counted(report.columns, "column name"),
        _counted(report.files, "file"),
        _counted(report.profiles, "workflow profile"),
    ]
    note = f" ({_counted(len(warnings), 'warning')})" if warnings else ""
    print(f"mlgate check: {shown} OK{note}: {', '.join(checked)} checked")
    return 0
