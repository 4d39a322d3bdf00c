"""The decision record of a rollout, read by people: the steps table and a Mermaid chart of weight and errors."""

from __future__ import annotations

import time
from typing import Any

from mlgate.gha import md_table

# What the error rates of the record and its analyses count (mlgate.rollout.analysis).
ERRORS_COUNTED = "errors: the model's own (5xx); client errors (4xx) are not held against it"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100.0 * float(value):.2f}%"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{1000.0 * float(value):.1f} ms"


def timeline(record: dict[str, Any]) -> list[tuple[float, int, float | None]]:
    """(seconds since the start, canary weight, canary error rate) at each analysis that read metrics."""
    started = float(record.get("started_at") or 0)
    points = []
    for step in record.get("steps", []):
        for analysis in step.get("analyses", []):
            if "canary" in analysis:
                at, weight = float(analysis.get("at") or started), int(step.get("canary") or 0)
                points.append((at - started, weight, (analysis["canary"] or {}).get("error_rate")))
    return points


def mermaid(record: dict[str, Any]) -> str:
    """An xychart of the canary's weight (bars) and error rate (line), both in percent, per analysis."""
    points = timeline(record)
    if not points:
        return ""
    labels = ", ".join(f'"{seconds:.0f}s"' for seconds, _, _ in points)
    weights = ", ".join(str(weight) for _, weight, _ in points)
    errors = ", ".join(f"{100.0 * (rate or 0.0):.2f}" for _, _, rate in points)
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            '    title "Canary weight (bars) and its own error rate, 5xx (line), percent"',
            f"    x-axis [{labels}]",
            '    y-axis "percent" 0 --> 100',
            f"    bar [{weights}]",
            f"    line [{errors}]",
            "```",
        ]
    )


def markdown(record: dict[str, Any]) -> str:
    canary, stable = record.get("canary") or {}, record.get("stable") or {}  # as RolloutRecord reads them
    outcome = record.get("outcome") or record.get("phase")
    plan = record.get("plan") or {}
    lines = [
        f"### mlgate rollout: {outcome} · {canary.get('model')} v{canary.get('version')} "
        f"against v{stable.get('version')}",
        "",
        f"- {record.get('reason') or 'running'}",
    ]
    if plan.get("false_alarm_budget") is not None and plan.get("alpha_per_test") is not None:
        lines.append(
            f"- false-alarm budget {plan['false_alarm_budget']}, "
            f"{plan['alpha_per_test']:.2g} per test and look (Bonferroni)"
        )
    lines += [f"- {ERRORS_COUNTED}", ""]
    rows = []
    for step in record.get("steps", []):
        analyses = [analysis for analysis in step.get("analyses", []) if "canary" in analysis]
        last = analyses[-1] if analyses else {}
        ours, theirs = last.get("canary") or {}, last.get("stable") or {}
        rows.append(
            [
                step["name"],
                str(step.get("verdict") or "running"),
                str(len(step.get("analyses", []))),
                f"{ours.get('requests') or 0:.0f} / {theirs.get('requests') or 0:.0f}",
                f"{_percent(ours.get('error_rate'))} / {_percent(theirs.get('error_rate'))}",
                f"{_ms(ours.get('p99_s'))} / {_ms(theirs.get('p99_s'))}",
                str(step.get("reason") or ""),
            ]
        )
    lines.append(
        md_table(
            ["step", "verdict", "analyses", "requests canary / stable", "errors (5xx)", "p99", "reason"],
            rows,
        )
    )
    chart = mermaid(record)
    if chart:
        lines += ["", chart]
    return "\n".join(lines) + "\n"


def status_text(record: dict[str, Any], split: str) -> str:
    step, plan = record.get("step") or {}, record.get("plan") or {}
    canary, stable = record.get("canary") or {}, record.get("stable") or {}
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(record.get("started_at") or 0)))
    lines = [
        f"rollout {record.get('id')}: {record.get('phase')} since {since}",
        f"  canary {canary.get('model')} v{canary.get('version')} against stable v{stable.get('version')}",
        f"  step {step.get('name', '-')} of {', '.join(s['name'] for s in plan.get('steps', [])) or '?'}",
        f"  traffic: {split}",
    ]
    if record.get("reason"):
        lines.append(f"  reason: {record['reason']}")
    return "\n".join(lines)
