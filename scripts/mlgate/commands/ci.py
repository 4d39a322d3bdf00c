"""`mlgate ci`: run the repository's own workflows on this machine under act, before pushing them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mlgate import redaction
from mlgate.errors import GateFailed, InputError
from mlgate.localci.act import ErrorAnnotation
from mlgate.localci.run import DEFAULT_EVENT, LocalCiRequest, LocalCiResult, LocalCiRun, run_local_ci
from mlgate.mlflowio import redact

# The summary shows the first errors, each on one line; the log holds them all.
MAX_ERRORS = 20
ERROR_WIDTH = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "workflow",
        nargs="?",
        help="the workflow to run: a file name in .github/workflows (pr.yml, or pr) or a path; "
        "default: every workflow the event triggers",
    )
    parser.add_argument(
        "--event", default=DEFAULT_EVENT, metavar="EVENT", help=f"the event that starts it (default: {DEFAULT_EVENT})"
    )
    parser.add_argument(
        "--pr-number", type=int, default=1, metavar="N", help="pull request number in the event (default: 1)"
    )
    parser.add_argument(
        "--base", default="main", metavar="BRANCH", help="the pull request's base branch (default: main)"
    )
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=VALUE", help="a workflow_dispatch input (repeatable)"
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="a repository variable, vars.NAME; without a value, from your environment (repeatable)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="a secret, secrets.NAME; without a value, from your environment (repeatable)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of every step (repeatable)",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI given to the workflow as the MLFLOW_TRACKING_URI secret; "
        "default: an MLflow server started for this run (sqlite, 127.0.0.1), stopped after it",
    )
    parser.add_argument(
        "--mlgate-source",
        type=Path,
        metavar="DIR",
        help="a copy of mlgate's repository at the release the workflows use (mlgate/mlgate/...@v1 resolves to it); "
        "default: MLGATE_SOURCE, else the checkout this mlgate is installed from",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="the run's folder (artifacts/, act.log, event.json; new or empty); "
        "default: a new folder under the temp folder",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the runner's tool cache (the venvs the setup action builds) and the cache stand-in's store, "
        "kept across runs; default: ~/.cache/mlgate/ci",
    )
    parser.add_argument(
        "--project", type=Path, default=Path(), metavar="DIR", help="a folder in the repository (default: .)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary, not act's output as it comes")


def parse_assignments(values: list[str], flag: str, env: Mapping[str, str], *, from_env: bool) -> dict[str, str]:
    """NAME=VALUE pairs; a bare NAME takes its value from the environment where `from_env` allows it."""
    parsed: dict[str, str] = {}
    for value in values:
        name, sep, given = value.partition("=")
        if not name:
            raise InputError(f"{flag} {value!r}: no name before '='", hint=f"write {flag} NAME=VALUE")
        if sep:
            parsed[name] = given
        elif from_env and name in env:
            parsed[name] = env[name]
        elif from_env:
            raise InputError(f"{flag} {name}: no value given and {name} is not set", hint=f"write {flag} {name}=VALUE")
        else:
            raise InputError(f"{flag} {value!r} has no value", hint=f"write {flag} {name}=VALUE")
    return parsed


def render_start(run: LocalCiRun) -> str:
    names = ", ".join(path.name for path in run.workflows)
    if run.mlflow_store is not None:
        mlflow = f"{run.tracking_uri} (a server for this run; its store: {run.mlflow_store})"
    else:
        mlflow = redact(run.tracking_uri)
    mlgate = f"{run.mlgate_source} (exported to {run.mlgate_tree})" if run.mlgate_source else str(run.mlgate_tree)
    return "\n".join(
        [
            f"mlgate ci: {names} on {run.event} in {run.project}",
            f"  mlgate/mlgate@v1: {mlgate}",
            f"  MLflow:           {mlflow}",
            f"  run folder:       {run.run_dir}",
            f"  caches:           {run.cache_dir} (the runner's tool cache and the stand-ins' cache, kept)",
            "",
        ]
    )


def _error_line(error: ErrorAnnotation) -> str:
    where = f"{error.file}:{error.line}: " if error.file and error.line else f"{error.file}: " if error.file else ""
    text = f"{where}{error.message}"
    shown = text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"
    return f"    {error.job.rpartition('/')[2]}: {shown}"


def render_result(result: LocalCiResult) -> str:
    run = result.run
    verdict = "passed" if result.returncode == 0 else f"failed (act exited {result.returncode})"
    lines = [f"mlgate ci: {', '.join(p.name for p in run.workflows)} on {run.event} {verdict} in {result.seconds:.0f}s"]
    lines += [f"  {'✅' if outcome == 'succeeded' else '❌'} {job}" for job, outcome in result.jobs.items()]
    if result.errors:
        lines.append("  errors:")
        lines += [_error_line(error) for error in result.errors[:MAX_ERRORS]]
        if len(result.errors) > MAX_ERRORS:
            lines.append(f"    …and {len(result.errors) - MAX_ERRORS} more in the log")
    lines.append(f"  artifacts: {run.artifacts}")
    lines.append(f"  log:       {run.log}")
    if run.mlflow_store is not None:
        # The server is gone with the run; the store stays and opens in the UI.
        lines.append(f"  MLflow:    mlflow ui --backend-store-uri sqlite:///{run.mlflow_store}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    env = os.environ
    secrets = parse_assignments(args.secret, "--secret", env, from_env=True)
    for value in secrets.values():
        # A secret handed to the workflows may come back in act's output, which this command echoes.
        redaction.register(value)
        redaction.register_uri(value)
    request = LocalCiRequest(
        project=args.project,
        workflow=args.workflow,
        event=args.event,
        pr_number=args.pr_number,
        base_ref=args.base,
        inputs=parse_assignments(args.input, "--input", env, from_env=False),
        variables=parse_assignments(args.var, "--var", env, from_env=True),
        secrets=secrets,
        env=parse_assignments(args.env, "--env", env, from_env=False),
        tracking_uri=args.tracking_uri,
        mlgate_source=args.mlgate_source,
        out_dir=args.out,
        cache_dir=args.cache_dir,
    )

    def announce(run: LocalCiRun) -> None:
        print(render_start(run), flush=True)

    result = run_local_ci(request, echo=None if args.quiet else sys.stdout, on_ready=announce)
    print("\n" + render_result(result), flush=True)
    if result.returncode != 0:
        failed = ", ".join(result.failed_jobs) or "see the log"
        raise GateFailed(
            f"the workflow failed under act: {failed}",
            hint=f"the whole log: {result.log}; artifacts: {result.artifacts}",
        )
    return 0
