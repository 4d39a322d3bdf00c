"""`mlgate compress`: build, measure and select a compressed variant; report it (summary, PR comment, outputs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
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
    flag_default,
    outputs_path,
    require_output,
    require_tracking_uri,
)
from mlgate.config import load_config
from mlgate.errors import GateFailed, InputError

if TYPE_CHECKING:
    from mlgate.compress import CompressResult

OUTPUTS_FILE = "mlgate-outputs/compress.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_candidate_argument(parser)
    add_tracking_argument(parser)
    parser.add_argument(
        "--junit-dir",
        default=env_default("junit-dir", "mlgate-reports"),
        help="folder of the JUnit XML of each variant's model tests (default: mlgate-reports)",
    )
    add_comment_arguments(parser, "add the table to the model tests' PR comment")
    parser.add_argument(
        "--if-configured",
        action="store_true",
        default=flag_default("if-configured") is True,
        help="without a compress section in mlgate.yaml, say so and exit 0 (what ml-ci.yml passes, so a project "
        "that declares no compression is not failed by the workflow's compress job)",
    )
    add_outputs_argument(parser, OUTPUTS_FILE, "model-uri, variant, selected, report")
    add_dvc_arguments(parser)


def _mb(size_bytes: float) -> str:
    return f"{size_bytes / 1e6:.3f}" if size_bytes < 1e7 else f"{size_bytes / 1e6:.1f}"


def _ms(values: dict[str, Any] | None) -> str:
    if not values:
        return "—"
    return f"{values['p50_ms']:.2f} / {values['p95_ms']:.2f}"


def _delta(value: float) -> str:
    return f"{value:+.4f}"


def table_rows(result: CompressResult) -> tuple[list[str], list[list[str]]]:
    """One row per variant (the original first): size, parameters, quality against the original, latency
    (p50/p95 ms of the graph on onnxruntime and of the network in torch eager, per batch), budgets, tests."""
    report = result.report
    batches = sorted({int(b) for v in result.variants for b in v.get("latency", {})})
    budget_batch = str(report["budgets"]["latency"]["batch"]) if report["budgets"].get("latency") else None
    original = report["original"]
    header = ["variant", "size MB", "params", "ROC AUC (Δ)", "max |Δscore|", "flips"]
    header += [f"b{batch} ms p50/p95: onnxruntime · torch" for batch in batches]
    if budget_batch:
        header.append(f"predict p95 ms b{budget_batch}")
    header += ["budgets", "model tests"]
    base_size = next((v["size_bytes"] for v in result.variants if v["name"] == "onnx-fp32"), None)
    fp32 = next((v for v in result.variants if v["name"] == "onnx-fp32"), None)
    rows: list[list[str]] = []
    row = ["original", "—", f"{original['parameters']:,}" if original.get("parameters") else "—",
           f"{original['metrics']['roc_auc']:.4f}", "—", "—"]  # fmt: skip
    for batch in batches:
        torch_ms = (fp32 or {}).get("latency", {}).get(str(batch), {}).get("torch")
        row.append(f"— · {_ms(torch_ms)}")
    if budget_batch:
        row.append(f"{original.get('latency', {}).get(budget_batch, {}).get('pyfunc', {}).get('p95_ms', 0):.2f}")
    rows.append([*row, "—", "—"])
    for variant in result.variants:
        size = _mb(variant["size_bytes"])
        if base_size and variant["name"] != "onnx-fp32":
            size += f" ({base_size / variant['size_bytes']:.1f}x smaller)"
        row = [
            variant["name"] + ("" if variant.get("candidate", True) else " (not offered)"),
            size,
            f"{variant['parameters']:,}",
            f"{variant['metrics']['roc_auc']:.4f} ({_delta(variant['metric_deltas']['roc_auc'])})",
            f"{variant['max_abs_diff']:.2g}",
            f"{variant['flipped_rows']} ({variant['flip_rate']:.2%})",
        ]
        for batch in batches:
            at = variant.get("latency", {}).get(str(batch), {})
            row.append(f"{_ms(at.get('onnxruntime'))} · {_ms(at.get('torch'))}")
        if budget_batch:
            row.append(f"{variant['latency'][budget_batch]['pyfunc']['p95_ms']:.2f}")
        failed = [b["budget"] for b in variant.get("budgets", []) if not b["passed"]]
        row.append("✅" if not failed else "❌ " + "; ".join(failed))
        selected = result.selected is not None and result.selected["name"] == variant["name"]
        tests = variant.get("model_tests", "not needed" if result.selected else "not run")
        row.append(("⭐ selected: " if selected else "") + tests)
        rows.append(row)
    return header, rows


def render(result: CompressResult) -> str:
    report = result.report
    selected = result.selected
    verdict = f"✅ selected `{selected['name']}`" if selected else "❌ no variant qualifies"
    lines = [f"### mlgate compress: {verdict}", ""]
    lines.append(f"- candidate: `{report['candidate']}` ({report['kind']}), threshold {report['threshold']:.4g}")
    if selected:
        lines.append(f"- selected: `{selected['model_uri']}` ({', '.join(selected['methods'])})")
    lines.append(
        f"- holdout: {report['holdout_rows']} rows; latency: {report['threads']} thread(s) pinned "
        f"({', '.join(report['original'].get('pinned') or []) or 'onnxruntime only'}); pyfunc predict for the budget"
    )
    header, rows = table_rows(result)
    lines += ["", gha.md_table(header, rows)]
    notes = list(report.get("notes") or [])
    for variant in result.variants:
        notes += [f"{variant['name']}: {note}" for note in variant.get("notes", []) if note]
    if notes:
        lines += ["", *[f"- {note}" for note in dict.fromkeys(notes)]]
    lines += ["", "<sub>Budgets: compress.budgets in mlgate.yaml; every variant is logged to MLflow (run "
              f"`{report['run_id']}`); the selected one carries the tag `mlgate.compress.selected`.</sub>"]  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mlgate.compress import run_compress

    loaded = load_config(args.config)
    if loaded.model.compress is None and args.if_configured:
        gha.annotation("notice", f"{args.config} declares no compress section: nothing to compress",
                       title="mlgate compress")  # fmt: skip
        gha.set_outputs({"model-uri": "", "variant": "", "selected": False, "run-id": "", "report": {}},
                        json_file=outputs_path(args, loaded.root, OUTPUTS_FILE))  # fmt: skip
        return 0
    if not args.model:
        raise InputError(
            "no candidate model given",
            hint="pass the train step's model-uri output as the model-uri input, or --model models:/<model_id>",
        )
    tracking_uri = require_tracking_uri(args.tracking_uri)
    junit_dir = Path(require_output("--junit-dir", args.junit_dir, folder=True))
    outputs_file = outputs_path(args, loaded.root, OUTPUTS_FILE)
    result = run_compress(
        loaded,
        candidate_uri=args.model,
        tracking_uri=tracking_uri,
        junit_dir=junit_dir,
        pull_data=not args.no_dvc_pull,
        dvc_remote_url=args.dvc_remote_url,
    )
    body = render(result)
    gha.add_summary(body)
    print(f"mlgate compress: timings {json.dumps({k: round(v, 3) for k, v in result.timings.items()})}")
    if args.comment:
        try:
            gha.upsert_pr_comment(f"test-model:{loaded.model.project}", body, section="compress")
        except (OSError, ValueError) as exc:
            gha.annotation("warning", f"could not update the PR comment: {str(exc)[:200]}", title="mlgate compress")
    selected = result.selected
    outputs: dict[str, object] = {
        "model-uri": selected["model_uri"] if selected else "",
        "variant": selected["name"] if selected else "",
        "selected": selected is not None,
        "source-model-uri": args.model,
        "run-id": result.report["run_id"],
        "report": {
            v["name"]: {"size_mb": v["size_mb"], "roc_auc": v["metrics"]["roc_auc"], "model_uri": v["model_uri"]}
            for v in result.variants
        },
    }
    chosen = next((a for a in result.attempts if selected is not None and a.name == selected["name"]), None)
    outputs["evidence"] = {
        "model_tests": chosen.evidence if chosen else None,
        "compress": {"variant": outputs["variant"], "source": args.model, "report": outputs["report"]},
    }
    gha.set_outputs(outputs, json_file=outputs_file)
    if selected is None:
        tried = "; ".join(f"{a.name}: {', '.join(a.failed[:4])}" for a in result.attempts)
        outside = [v["name"] for v in result.variants if v.get("candidate") and not v.get("model_tests")]
        reasons = []
        if outside:
            reasons.append(f"outside the budgets: {', '.join(outside)}")
        if tried:
            reasons.append(f"failed the model tests: {tried}")
        if not result.variants:
            reasons.append("no variant could be built (see the notes)")
        raise GateFailed(
            f"no compressed variant qualifies ({'; '.join(reasons)})",
            hint="the job summary's table shows each variant against compress.budgets; relax a budget, add a method "
            "(compress.methods), or fix the failing model tests",
        )
    print(f"mlgate compress: selected {selected['name']} {selected['model_uri']}")
    return 0
