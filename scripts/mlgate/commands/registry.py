"""`mlgate registry`: register, promote, rollback, status and history of the registered model, audited."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate import gha
from mlgate.commands.arguments import (
    add_config_argument,
    add_operation_argument,
    add_tracking_argument,
    env_default,
    require_operation,
    require_tracking_uri,
)
from mlgate.config import load_config

if TYPE_CHECKING:
    from mlgate.registry import Decision

OPERATIONS = ("register", "promote", "rollback", "status", "history")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_operation_argument(
        parser,
        OPERATIONS,
        "register a model as @challenger; promote the challenger to @champion (keeping @previous); "
        "rollback @champion to @previous or --version; status of the aliases; history (the audit trail)",
    )
    parser.add_argument("name", nargs="?", default=None, help="registered model name (default: from mlgate.yaml)")
    add_config_argument(parser)
    add_tracking_argument(parser)
    parser.add_argument("--model-uri", default=env_default("model-uri"), help="register: models:/<model_id>")
    parser.add_argument(
        "--evidence",
        default=env_default("evidence"),
        help="register: the `evidence` output (JSON) of the compress job, or of test-model without compression "
        "(default: the evidence in the project's mlgate-outputs/compress.json or test-model.json, when that run's "
        "model-uri is --model-uri)",
    )
    parser.add_argument("--version", default=env_default("version"), help="promote/rollback: this version")
    parser.add_argument("--reason", default=env_default("reason") or "", help="rollback: why (recorded)")
    parser.add_argument(
        "--environment",
        default=env_default("environment") or "",
        help="the GitHub environment this runs in (its approvers are read from the run and recorded)",
    )
    parser.add_argument("--json", action="store_true", help="status/history: print JSON")


# The outputs files of the runs whose evidence a local register reads by default, the compressed model's first.
RECORDED_EVIDENCE = ("mlgate-outputs/compress.json", "mlgate-outputs/test-model.json")


def recorded_evidence(root: Path, model_uri: str) -> tuple[str | None, Path | None]:
    """The `evidence` the project's last compress or test-model run wrote, when that run's model-uri is
    `model_uri` (what a local register of the model it just selected or tested means), and its file."""
    for name in RECORDED_EVIDENCE:
        path = root / name
        try:
            outputs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # absent, or not a run's outputs: nothing recorded there
        if isinstance(outputs, dict) and outputs.get("model-uri") == model_uri and "evidence" in outputs:
            return json.dumps(outputs["evidence"]), path
    return None, None


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + " UTC" if at else "?"


def render_decision(decision: Decision) -> str:
    lines = [
        f"### mlgate registry {decision.operation}: {decision.decision} · {decision.model} v{decision.version}",
        "",
    ]
    lines.append(f"- {decision.reason}")
    moved = sorted(set(decision.aliases_before) | set(decision.aliases_after))
    rows = [
        [f"@{alias}", decision.aliases_before.get(alias, "—"), decision.aliases_after.get(alias, "—")]
        for alias in moved
    ]
    if rows:
        lines += ["", gha.md_table(["alias", "before", "after"], rows)]
    lines += ["", f"<sub>Audit record: run `{decision.audit_run_id}` of the audit experiment.</sub>"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mlgate.errors import GateFailed, InputError
    from mlgate.registry import open_registry, operations
    from mlgate.registry.audit import Who

    require_operation(args, "registry", OPERATIONS)
    loaded = load_config(args.config)
    registry = open_registry(loaded, require_tracking_uri(args.tracking_uri), args.name)
    if args.operation == "status":
        # What it finishes (an operation a fault interrupted) goes to stderr beside --json's document.
        aliases = operations.status(
            registry, say=lambda line: print(line, file=sys.stderr if args.json else sys.stdout)
        )
        if args.json:
            print(json.dumps(aliases, indent=1))
        else:
            rows = [
                [
                    f"@{alias}",
                    v["version"],
                    v["variant"] or "—",
                    v["model_uri"],
                    v["commit"][:12] or "—",
                    v["promoted_by"] or "—",
                    v["promoted_at"] or "—",
                ]
                for alias, v in aliases.items()
            ]
            header = ["alias", "version", "variant", "model", "commit", "promoted by", "promoted at"]
            print(gha.plain_text(gha.md_table(header, rows)) if rows else f"{registry.name}: no aliases")
        gha.set_outputs({"aliases": {alias: v["version"] for alias, v in aliases.items()}})
        return 0
    if args.operation == "history":
        records = operations.history(registry)
        if args.json:
            print(json.dumps([r.to_json() for r in records], indent=1, default=str))
        else:
            for r in records:
                approvers = f", approved by {', '.join(r.who.approvers)}" if r.who.approvers else ""
                print(
                    f"{_when(r.at)}  {r.operation:<8} v{r.version or '-':<4} {r.decision:<11} by "
                    f"{r.who.actor}{approvers}: {r.reason}" + (f" ({r.who.run_url})" if r.who.run_url else "")
                )
            print(f"{registry.name}: {len(records)} record(s)")
        return 0
    who = Who.from_env(args.environment)
    decision: Decision
    if args.operation == "register":
        if not args.model_uri:
            raise InputError("register needs --model-uri", hint="pass the compress (or train) job's model-uri")
        evidence = args.evidence
        if not evidence:
            evidence, source = recorded_evidence(loaded.root, args.model_uri)
            if source is not None:
                print(f"mlgate registry: the evidence recorded in {source.relative_to(loaded.root)}")
        decision = operations.register(registry, args.model_uri, operations.Evidence.parse(evidence), who)
    elif args.operation == "promote":
        decision = operations.promote(loaded, registry, who, args.version)
    else:
        decision = operations.rollback(registry, who, args.reason, args.version)
    gha.add_summary(render_decision(decision))
    outputs: dict[str, Any] = {
        "model-name": decision.model,
        "version": decision.version,
        "version-uri": f"models:/{decision.model}/{decision.version}" if decision.version else "",
        "decision": decision.decision,
        "reason": decision.reason,
        "aliases": decision.aliases_after,
        "audit-run-id": decision.audit_run_id,
    }
    gha.set_outputs(outputs)
    if decision.decision == "rejected":
        raise GateFailed(
            f"{decision.model}: version {decision.version} not promoted: {decision.reason}",
            hint=f"the aliases are unchanged; the decision is recorded (mlgate registry history {decision.model})",
        )
    print(f"mlgate registry {decision.operation}: {decision.decision}: {decision.reason}")
    return 0
