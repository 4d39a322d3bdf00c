"""`mlgate rollout`: the staged canary of a registered version against @champion: start, status, abort."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

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
from mlgate.errors import GateFailed

if TYPE_CHECKING:
    from mlgate.rollout.operations import RolloutRequest, StartResult

OPERATIONS = ("start", "status", "abort")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_operation_argument(
        parser,
        OPERATIONS,
        "start: run the steps to promotion or rollback; status: the rollout's phase, step and split; "
        "abort: every request back on the stable model and the rollout closed (also after its controller died)",
    )
    add_config_argument(parser)
    add_tracking_argument(parser)
    parser.add_argument(
        "--version",
        default=env_default("version"),
        help="start: the registered version to roll out (default: the version @challenger points at)",
    )
    parser.add_argument("--name", default=None, help="registered model (default: registry.model of mlgate.yaml)")
    parser.add_argument(
        "--environment",
        default=env_default("environment") or "",
        help="the GitHub environment this runs in (its approvers are recorded with the promotion)",
    )
    parser.add_argument(
        "--record",
        default=env_default("record"),
        help="start/abort: also write the decision record (JSON) here, e.g. for an artifact upload",
    )
    parser.add_argument(
        "--reason", default=env_default("reason") or "aborted by hand", help="abort: why, for the record"
    )
    parser.add_argument(
        "--profile",
        choices=("production", "test"),
        default=env_default("profile"),
        help="start: the timing profile, overriding rollout.profile (test: seconds, for tests and demos)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        default=(env_default("serve") or "").lower() == "true",
        help="start: bring up the local nginx stack for the rollout (@champion stable, the version as canary) "
        "and take it down after; for CI runners and demos, where nothing else serves the models",
    )
    parser.add_argument(
        "--load",
        default=env_default("load"),
        help="start: a command that sends requests during the rollout (e.g. a headless locust run, bounded), "
        "started once the servers are up with MLGATE_TRAFFIC_URL set, and stopped at the end",
    )
    parser.add_argument(
        "--first-release",
        choices=("fail", "promote"),
        default=env_default("first-release") or "fail",
        help="start, with no @champion yet: `promote` the version through the registry gate directly (there is "
        "nothing to compare a canary with), or `fail` (default)",
    )
    parser.add_argument(
        "--stale-only",
        action="store_true",
        help="abort: only a rollout whose controller is gone (a cleanup step's guard: a live one is left alone)",
    )
    parser.add_argument("--json", action="store_true", help="status: print JSON")


def _request(args: argparse.Namespace, *, tracking_uri: str | None) -> RolloutRequest:
    from mlgate.rollout.operations import RolloutRequest

    return RolloutRequest(
        tracking_uri=tracking_uri,
        environment=args.environment,
        record=Path(args.record) if args.record else None,
        version=args.version,
        name=args.name,
        profile=args.profile,
        serve=args.serve,
        load=args.load,
        first_release=args.first_release,
        reason=args.reason,
        stale_only=args.stale_only,
    )


def _render_start(result: StartResult) -> int:
    """The outputs of `start`, and the failure a user reads when the version was not promoted."""
    if result.how == "first-release":
        print(f"mlgate rollout: no champion yet: {result.outcome}: {result.reason}", flush=True)
    outputs = {"outcome": result.outcome, "decision": result.decision, "version": result.version,
               "reason": result.reason}  # fmt: skip
    if result.how == "canary":
        assert result.record is not None
        outputs |= {"rollout-id": str(result.rollout_id), "record": str(result.record.resolve())}
    gha.set_outputs(outputs)
    if result.promoted:
        return 0
    if result.how == "first-release":
        raise GateFailed(f"version {result.version} not promoted: {result.reason}")
    if result.how == "refused":
        raise GateFailed(
            f"version {result.version} not promoted, so not rolled out: {result.reason}",
            hint="traffic and the registry are unchanged; see registry.promotion in mlgate.yaml",
        )
    raise GateFailed(
        f"rollout of version {result.version} {result.outcome}: {result.reason}",
        hint=f"traffic is on the stable version {result.stable}; the record: {result.record}",
    )


def run(args: argparse.Namespace) -> int:
    from mlgate.rollout import operations
    from mlgate.rollout.report import status_text

    require_operation(args, "rollout", OPERATIONS)
    loaded = load_config(args.config)
    if args.operation == "start":
        request = _request(args, tracking_uri=require_tracking_uri(args.tracking_uri))
        return _render_start(operations.start(loaded, request))
    if args.operation == "abort":
        for line in operations.abort_rollout(loaded, _request(args, tracking_uri=args.tracking_uri)):
            print(f"mlgate rollout abort: {line}")
        return 0
    found = operations.rollout_status(loaded)
    shown = found.split.describe() if found.split else "no split applied yet"
    if args.json:
        split = found.split.to_json() if found.split else None
        print(json.dumps({"rollout": found.rollout, "split": split}, indent=1, default=str))
    elif found.rollout is None:
        print(f"no rollout has run here ({found.where}); traffic: {shown}")
    else:
        print(status_text(found.rollout, shown))
    return 0
