"""`mlgate lint`: run the lint gate and report each finding as an annotation and a summary table."""

from __future__ import annotations

import argparse
import os

from mlgate import gha
from mlgate.commands.arguments import add_config_argument, env_default, flag_default
from mlgate.config import load_config
from mlgate.errors import GateFailed
from mlgate.lint import LintReport, run_lint
from mlgate.projenv import ensure_project_env, mypy_cache_dir

SUMMARY_ROWS = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--paths",
        default=env_default("paths"),
        help="space- or comma-separated paths to lint (default: lint.paths in mlgate.yaml)",
    )
    strict = parser.add_mutually_exclusive_group()
    strict.add_argument("--strict", dest="strict", action="store_true", default=flag_default("strict"))
    strict.add_argument("--no-strict", dest="strict", action="store_false")


def render(report: LintReport) -> str:
    counts = {run.tool: len(run.findings) for run in report.runs}
    head = "✅ lint passed" if report.passed else f"❌ lint failed: {len(report.findings)} finding(s)"
    lines = [f"### mlgate lint: {head}", ""]
    lines.append(gha.md_table(["tool", "findings"], [[tool, str(n)] for tool, n in counts.items()]))
    if report.findings:
        rows = [[f.tool, f"`{f.file}:{f.line}:{f.column}`", f.code, f.message] for f in report.findings[:SUMMARY_ROWS]]
        lines += ["", gha.md_table(["tool", "where", "code", "message"], rows)]
        if len(report.findings) > SUMMARY_ROWS:
            lines.append(f"\n…and {len(report.findings) - SUMMARY_ROWS} more, see the annotations.")
        lines.append("\nFix locally: `ruff check --fix`, `ruff format`, then `mypy`; or run `mlgate lint`.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    settings = loaded.model.lint
    paths = args.paths.replace(",", " ").split() if args.paths else settings.paths
    strict = settings.strict if args.strict is None else args.strict
    python = None
    mypy_cache = None
    if settings.mypy and loaded.model.environment.install:
        with gha.group("project environment (environment.install)"):
            python = ensure_project_env(loaded)
        # Kept with the venv (a runner's tool cache, or actions/cache in actions/lint); MYPY_CACHE_DIR wins.
        if python is not None and not os.environ.get("MYPY_CACHE_DIR"):
            mypy_cache = mypy_cache_dir(python)
    with gha.group("ruff check, ruff format --check, mypy"):
        report = run_lint(
            loaded.root,
            paths,
            ruff=settings.ruff,
            format_check=settings.format,
            mypy=settings.mypy,
            strict=strict,
            python=python,
            mypy_cache=mypy_cache,
        )
    for finding in report.findings:
        gha.annotation(
            "error",
            f"{finding.code}: {finding.message}" if finding.code else finding.message,
            file=str(loaded.root / finding.file),
            line=finding.line,
            col=finding.column,
            title=finding.tool,
        )
    gha.add_summary(render(report))
    gha.set_output("passed", "true" if report.passed else "false")
    gha.set_output("findings", str(len(report.findings)))
    gha.set_output("mypy-cache", str(mypy_cache or ""))
    if not report.passed:
        by_tool = ", ".join(f"{run.tool}: {len(run.findings)}" for run in report.runs if run.findings)
        raise GateFailed(f"lint failed ({by_tool})", hint="run `mlgate lint` locally; ruff can fix most of it")
    return 0
