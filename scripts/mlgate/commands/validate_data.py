"""`mlgate validate-data`: run the data gate and report it as a job summary, annotations and outputs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mlgate import gha
from mlgate.commands.arguments import add_config_argument, add_dvc_arguments, env_default, require_output
from mlgate.config import LoadedConfig, load_config
from mlgate.errors import GateFailed

if TYPE_CHECKING:
    from mlgate.data import DataReport

DEFAULT_DOCS_DIR = "mlgate-data-docs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--sources",
        default=env_default("sources"),
        help="comma-separated sources to run the suite on (default: data.validate, else every source)",
    )
    parser.add_argument(
        "--docs-dir",
        default=env_default("docs-dir", DEFAULT_DOCS_DIR),
        help=f"folder for Great Expectations Data Docs and report.json (default: {DEFAULT_DOCS_DIR})",
    )
    parser.add_argument(
        "--drift-current",
        default=env_default("drift-current"),
        help="source compared with the drift reference, instead of data.drift.current",
    )
    add_dvc_arguments(parser)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def run(args: argparse.Namespace) -> int:
    # Imported here: pandas and Great Expectations load in seconds, and other commands never need them.
    from mlgate.data import dvc_pull, needed_sources, validate_data

    config = load_config(args.config)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    docs_dir = require_output("--docs-dir", args.docs_dir, folder=True)
    if config.model.data.dvc and not args.no_dvc_pull:
        with gha.group("dvc pull"):
            dvc_pull(config, needed_sources(config, sources, args.drift_current), args.dvc_remote_url)
    with gha.group("Great Expectations"):
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        report: DataReport = validate_data(config, sources=sources, docs_dir=docs_dir, drift_current=args.drift_current)
    docs_dir.mkdir(parents=True, exist_ok=True)
    report_path = docs_dir / "report.json"
    report_path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")

    _annotate(config, report)
    gha.add_summary(_summary(report, report_path))
    drifted = [d.feature for d in report.drifted]
    failed = report.failed_expectations
    gha.set_output("passed", "true" if report.passed else "false")
    gha.set_output("failed-checks", str(len(failed)))
    gha.set_output("drifted-features", ",".join(drifted))
    gha.set_output("docs-dir", str(docs_dir))
    gha.set_output("report", str(report_path))
    if report.passed:
        print(
            f"data validation passed: {len(report.expectations)} expectation(s), "
            f"{len(report.drift)} feature(s) compared"
        )
        return 0
    leaked = report.leakage is not None and not report.leakage.passed
    raise GateFailed(
        f"data validation failed: {len(failed)} expectation(s), {len(drifted)} drifted feature(s)"
        + (f", {report.leakage.overlapping} leaked key(s)" if leaked and report.leakage else ""),
        hint=f"see the job summary and the Data Docs in {docs_dir} (report: {report_path})",
    )


def _annotate(config: LoadedConfig, report: DataReport) -> None:
    config_file = str(config.path)
    for outcome in report.failed_expectations:
        column = f"{outcome.column} " if outcome.column else ""
        print(f"FAILED {outcome.source}: {column}{outcome.expected}: {outcome.observed}")
        gha.annotation(
            "error",
            f"{outcome.source}: {column}{outcome.expected} failed: {outcome.observed}",
            file=config_file,
            line=config.line_of(*outcome.key),
            title=f"data expectation {outcome.check}",
        )
    for drift in report.drift:
        if drift.status == "ok":
            continue
        text = (
            f"{report.drift_current}: {drift.feature} psi={_fmt(drift.psi)} "
            f"{drift.test} p={drift.pvalue:.3g} effect={_fmt(drift.effect)}"
        )
        if drift.status == "fail":
            print(f"DRIFT {text}")
        gha.annotation(
            "error" if drift.status == "fail" else "warning",
            f"drift of {drift.feature} vs {report.drift_reference}: {text}",
            file=config_file,
            line=config.line_of(*drift.key),
            title=f"data drift {drift.status}",
        )
    if report.leakage is not None and not report.leakage.passed:
        leak = report.leakage
        print(f"LEAKAGE {leak.left}/{leak.right}: {leak.overlapping} shared {leak.key}(s), e.g. {leak.examples}")
        gha.annotation(
            "error",
            f"{leak.overlapping} {leak.key} value(s) of {leak.left} also appear in {leak.right}, "
            f"e.g. {', '.join(leak.examples)}",
            file=config_file,
            line=config.line_of("data", "leakage", "key"),
            title="data leakage",
        )


def _summary(report: DataReport, report_path: Path) -> str:
    failed = report.failed_expectations
    passed_count = len(report.expectations) - len(failed)
    lines = [f"## {'✅' if report.passed else '❌'} Data validation {'passed' if report.passed else 'failed'}"]
    lines.append("Sources: " + ", ".join(f"`{s.name}` ({s.rows} rows, {s.columns} columns)" for s in report.sources))
    lines.append(f"**Expectations:** {passed_count} passed, {len(failed)} failed.")
    if failed:
        lines.append(
            gha.md_table(
                ["source", "column", "check", "expected", "observed"],
                [[o.source, o.column or "(table)", o.check, o.expected, o.observed] for o in failed],
            )
        )
    if report.drift:
        lines.append(f"### Drift of `{report.drift_current}` against `{report.drift_reference}`")
        lines.append(
            gha.md_table(
                ["feature", "kind", "PSI", "test", "statistic", "p-value", "effect", "status"],
                [
                    [
                        d.feature,
                        d.kind,
                        _fmt(d.psi),
                        d.test,
                        _fmt(d.statistic),
                        f"{d.pvalue:.3g}",
                        _fmt(d.effect),
                        {"ok": "✅ ok", "warn": "⚠️ warn", "fail": "❌ fail"}[d.status],
                    ]
                    for d in report.drift
                ],
            )
        )
    if report.leakage is not None:
        leak = report.leakage
        if leak.passed:
            lines.append(f"**Leakage:** ✅ no `{leak.key}` of `{leak.left}` appears in `{leak.right}`.")
        else:
            lines.append(
                f"**Leakage:** ❌ {leak.overlapping} `{leak.key}` value(s) of `{leak.left}` appear in "
                f"`{leak.right}`, e.g. {', '.join(leak.examples)}."
            )
    if report.docs_index is not None:
        lines.append(f"Data Docs: `{report.docs_index}` · report: `{report_path}`")
    return "\n\n".join(lines)
