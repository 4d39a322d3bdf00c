"""`mlgate test-model`: run the model tests and report them (job summary, PR comment, annotations, outputs)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from mlgate import gha
from mlgate.commands.arguments import (
    add_candidate_argument,
    add_comment_arguments,
    add_config_argument,
    add_dvc_arguments,
    add_outputs_argument,
    add_tracking_argument,
    env_default,
    outputs_path,
    require_output,
    require_tracking_uri,
)
from mlgate.config import PerformanceMetric, load_config
from mlgate.errors import GateFailed, InputError
from mlgate.modeltest import is_declared_check

if TYPE_CHECKING:
    from mlgate.modeltest import ModelTestReport

METRICS: tuple[PerformanceMetric, ...] = (
    "roc_auc", "pr_auc", "recall_at_precision", "f1", "precision", "recall", "accuracy",
)  # fmt: skip
ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}
CASE_COLUMNS = 6
# Relative to the project root: a local run's verdict and metrics, without reading the log.
OUTPUTS_FILE = "mlgate-outputs/test-model.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_candidate_argument(parser)
    add_tracking_argument(parser)
    parser.add_argument(
        "--junit-xml",
        default=env_default("junit-xml", "mlgate-reports/model-tests.xml"),
        help="where to write the JUnit XML of every check and test (default: mlgate-reports/model-tests.xml)",
    )
    add_comment_arguments(parser, "post or update the PR comment with the results")
    add_outputs_argument(parser, OUTPUTS_FILE, "passed, promotable, metrics")
    add_dvc_arguments(parser)
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --), e.g. -k latency")


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _metric_rows(report: ModelTestReport) -> list[list[str]]:
    candidate, champion = report.metrics("candidate"), report.metrics("champion")
    by_id = {check["id"]: check for check in report.checks}
    rows = []
    for name in METRICS:
        value, theirs = candidate.get(name), champion.get(name)
        delta = _fmt(value - theirs, 4) if value is not None and theirs is not None else "n/a"
        if delta != "n/a" and not delta.startswith("-"):
            delta = "+" + delta
        gates = [by_id[key] for key in (f"performance.{name}", f"baseline.{name}") if key in by_id]
        thresholds = [g["bound"].replace("champion", "champ.") for g in gates if g["outcome"] != "skipped"]
        outcomes = {g["outcome"] for g in gates}
        result = "❌" if "failed" in outcomes else "✅" if "passed" in outcomes else "—"
        rows.append([name, _fmt(value), _fmt(theirs) if champion else "—", delta if champion else "—",
                     ", ".join(thresholds) or "—", result])  # fmt: skip
    return rows


def _metric_ids() -> set[str]:
    return {f"{family}.{name}" for family in ("performance", "baseline") for name in METRICS}


def _case_table(cases: list[dict[str, Any]]) -> str:
    columns = list(cases[0])[:CASE_COLUMNS]
    rows = [[_fmt(case.get(column)) for column in columns] for case in cases]
    return gha.md_table(columns, rows)


def render(report: ModelTestReport, config_path: str) -> str:
    raw = report.raw
    verdict = "✅ passed" if report.passed else "❌ failed"
    promotable = "promotable" if report.promotable else "not promotable"
    lines = [f"### mlgate test-model: {verdict} · {promotable}", ""]
    candidate = raw["candidate"]
    champion = raw.get("champion")
    holdout = raw.get("holdout", {})
    lines.append(f"- candidate: `{candidate['uri']}` (threshold {candidate['threshold']:.4g})")
    if champion:
        lines.append(f"- champion: `{raw['baseline']}` (version {champion['version']})")
    elif raw.get("baseline"):
        lines.append(f"- champion: none yet: `{raw['baseline']}` does not exist, so there is no baseline to compare")
    else:
        lines.append("- champion: no baseline configured (model_tests.baseline)")
    lines.append(f"- holdout: `{holdout.get('source')}`, {holdout.get('rows')} rows")
    lines.append(f"- promotion: {'✅' if report.promotable else '⛔'} {raw.get('promotion', '')}")
    lines += ["", "#### Candidate vs champion", ""]
    lines.append(
        gha.md_table(["metric", "candidate", "champion", "delta", "threshold", "result"], _metric_rows(report))
    )
    others = [check for check in report.checks if check["id"] not in _metric_ids()]
    if others:
        lines += ["", "#### Checks", ""]
        # rows: how many rows a behavioral check judged (those in scope), so a pass rate is read against it.
        rows = [
            [f"{check['family']}: {check['name']}", _fmt(check["value"]), _fmt(check["champion"]), check["bound"],
             "—" if check.get("rows") is None else str(check["rows"]), ICONS.get(check["outcome"], check["outcome"]),
             check["message"]]
            for check in others
        ]  # fmt: skip
        columns = ["check", "candidate", "champion", "required", "rows", "result", "detail"]
        lines.append(gha.md_table(columns, rows))
    failed_cases = [check for check in report.checks if check["outcome"] == "failed" and check["cases"]]
    for check in failed_cases:
        lines += ["", f"<details open><summary>❌ {check['name']}: first failing cases</summary>", ""]
        lines += [_case_table(check["cases"]), "", "</details>"]
    # One outcome per test: its call, or the setup that skipped or failed it (e.g. no champion yet).
    if report.errored_checks:
        lines += ["", "#### Checks that could not run", ""]
        for test in report.errored_checks:
            last = [ln.strip() for ln in test["message"].splitlines() if ln.strip()][-1:] or [""]
            lines.append(f"- ❌ `{test['nodeid']}`: {last[0][:300]}")
    own = [t for t in report.tests if not is_declared_check(t) and (t["when"] == "call" or t["outcome"] != "passed")]
    own_failed = [t for t in own if t["outcome"] == "failed"]

    if own or own_failed:
        counts = {outcome: sum(t["outcome"] == outcome for t in own) for outcome in ("passed", "failed", "skipped")}
        lines += ["", "#### The project's own model tests", ""]
        lines.append(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
        for test in own_failed[:10]:
            first = next((ln for ln in test["message"].splitlines() if ln.strip().startswith("E ")), "")
            lines.append(f"- ❌ `{test['nodeid']}` ({test['when']}): {first.strip()[2:].strip()[:300]}")
    lines += [
        "",
        f"<sub>Checks declared in `{config_path}` (model_tests); JUnit XML: `{report.junit_path.name}`.</sub>",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mlgate.modeltest import run_model_tests

    loaded = load_config(args.config)
    if not args.model:
        raise InputError(
            "no candidate model given",
            hint="pass the train step's model-uri output as the model-uri input, or --model models:/<model_id>",
        )
    tracking_uri = require_tracking_uri(args.tracking_uri)
    junit_path = require_output("--junit-xml", args.junit_xml)
    outputs_file = outputs_path(args, loaded.root, OUTPUTS_FILE)
    report = run_model_tests(
        loaded,
        candidate_uri=args.model,
        tracking_uri=tracking_uri,
        junit_path=junit_path,
        pull_data=not args.no_dvc_pull,
        dvc_remote_url=args.dvc_remote_url,
        extra_pytest_args=args.pytest_args,
    )
    body = render(report, args.config)
    gha.add_summary(body)
    timings = {k: round(v, 3) for k, v in report.timings.items()}
    print(f"mlgate test-model: timings {json.dumps(timings, sort_keys=True)}")
    url: str | None = None
    if args.comment:
        try:
            url = gha.upsert_pr_comment(f"test-model:{loaded.model.project}", body)
        except (OSError, ValueError) as exc:  # urllib's HTTPError/URLError are OSErrors
            # A fork's read-only token cannot comment: the gate's verdict must not depend on it.
            gha.annotation(
                "warning",
                f"could not post the PR comment: {str(exc)[:200]}; grant the job pull-requests: write, "
                "or set comment: false",
                title="mlgate test-model",
            )
        if url:
            print(f"mlgate test-model: PR comment {url}")
    failed = [check for check in report.checks if check["outcome"] == "failed"]
    for check in failed:
        gha.annotation("error", f"{check['id']}: {check['message']}", file=str(loaded.path), line=check["line"],
                       title=f"mlgate test-model: {check['name']}")  # fmt: skip
    outputs: dict[str, object] = {
        "model-uri": args.model,
        "passed": report.passed,
        "promotable": report.promotable,
        "metrics": {"candidate": report.metrics("candidate"), "champion": report.metrics("champion") or None},
        "junit-xml": str(report.junit_path),
        "timings": timings,
        "comment-url": url or "",
        "evidence": {"model_tests": report.evidence()},
    }
    gha.set_outputs(outputs, json_file=outputs_file)
    if not report.passed:
        errored = [t["nodeid"] for t in report.errored_checks]
        names = [check["id"] for check in failed] + errored + [t["nodeid"] for t in report.user_failures]
        raise GateFailed(
            f"{len(names)} model check(s) failed: {', '.join(names[:12]) or 'see the pytest output'}",
            hint="the job summary shows each check against its threshold and the champion, with failing cases",
        )
    print(f"mlgate test-model: passed; {'promotable' if report.promotable else 'not promotable'}: "
          f"{report.raw.get('promotion', '')}")  # fmt: skip
    return 0
