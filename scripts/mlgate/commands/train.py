"""`mlgate train`: train the model in the project venv, tracked in MLflow, and report run and model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import TYPE_CHECKING

from mlgate import gha
from mlgate.commands.arguments import (
    add_config_argument,
    add_dvc_arguments,
    add_outputs_argument,
    add_tracking_argument,
    env_default,
    flag_default,
    outputs_path,
    require_tracking_uri,
)
from mlgate.config import DistributedConfig, LoadedConfig, load_config
from mlgate.errors import GateFailed, InputError

if TYPE_CHECKING:
    from mlgate.train import TrainReport

LINEAGE_ROWS = 40
# Relative to the project root: where a local run's model URI is found without reading the log.
OUTPUTS_FILE = "mlgate-outputs/train.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--profile",
        default=env_default("profile", "quick"),
        help="parameter profile under train.profiles (default: quick)",
    )
    add_tracking_argument(parser)
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=env_default("device"),
        help="override train.device: auto (CUDA if visible), cpu or cuda",
    )
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument(
        "--require-gpu",
        dest="require_gpu",
        action="store_true",
        default=flag_default("require-gpu"),
        help="fail at once when no CUDA GPU is visible (default: train.require_gpu)",
    )
    gpu.add_argument("--no-require-gpu", dest="require_gpu", action="store_false")
    add_dvc_arguments(parser)
    parser.add_argument(
        "--repro-check",
        action="store_true",
        default=bool(flag_default("repro-check")),
        help="train twice with the same seed and fail when train.metrics differ by more than train.repro_tolerance",
    )
    parser.add_argument(
        "--distributed",
        default=env_default("distributed"),
        help="override train.distributed's processes on this node: none, auto (one per visible GPU) or a number",
    )
    parser.add_argument("--nnodes", default=env_default("nnodes"), help="override train.distributed.nnodes")
    parser.add_argument("--node-rank", default=env_default("node-rank"), help="override train.distributed.node_rank")
    parser.add_argument(
        "--rdzv-endpoint", default=env_default("rdzv-endpoint"), help="override train.distributed.rdzv_endpoint"
    )
    parser.add_argument("--rdzv-id", default=env_default("rdzv-id"), help="override train.distributed.rdzv_id")
    add_outputs_argument(parser, OUTPUTS_FILE, "run-id, model-uri")


def _whole(flag: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{flag} {value!r} is not a whole number", hint=f"e.g. {flag} 2") from None


def with_distributed_overrides(loaded: LoadedConfig, args: argparse.Namespace) -> LoadedConfig:
    """train.distributed with the command line's (or the action inputs') overrides applied and validated."""
    from pydantic import ValidationError

    from mlgate.train import settings_of

    flags = {"nnodes": _whole("--nnodes", args.nnodes), "node_rank": _whole("--node-rank", args.node_rank),
             "rdzv_endpoint": args.rdzv_endpoint, "rdzv_id": args.rdzv_id}  # fmt: skip
    given = {key: value for key, value in flags.items() if value is not None}
    if args.distributed is None and not given:
        return loaded
    settings = settings_of(loaded)
    current = settings.distributed.model_dump() if settings.distributed is not None else {}
    choice = args.distributed.strip() if args.distributed is not None else None
    if choice == "none":
        if given:
            names = ", ".join("--" + key.replace("_", "-") for key in given)
            raise InputError(f"--distributed none with {names}", hint="drop those, or ask for auto or a number")
        new = None
    else:
        if choice is not None:
            if choice != "auto" and not choice.isdigit():
                raise InputError(
                    f"--distributed {choice!r} is none of: none, auto, a number of processes",
                    hint="e.g. --distributed auto (one process per visible GPU) or --distributed 2",
                )
            current["nproc_per_node"] = choice if choice == "auto" else int(choice)
        try:
            new = DistributedConfig.model_validate(current | given)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise InputError(
                f"train.distributed with the overrides ({', '.join(f'{k}={v}' for k, v in given.items()) or choice}): "
                f"{problem['msg']}",
                hint="fix the distributed inputs (or the flags), e.g. rdzv-endpoint host:port when nnodes > 1",
            ) from None
    train = settings.model_copy(update={"distributed": new})
    return dataclasses.replace(loaded, model=loaded.model.model_copy(update={"train": train}))


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.6g}"


def _run_link(uri: str, experiment_id: str, run_id: str) -> str:
    if uri.startswith(("http://", "https://")) and "***" not in uri:
        return f"[{run_id}]({uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}`"


def render(report: TrainReport) -> str:
    run = report.main
    ok = not report.repro_differences
    head = "✅ trained" if ok else "❌ not reproducible"
    lines = [f"### mlgate train: {head} (profile `{report.profile}`)", ""]
    lines.append(f"- device: **{report.device.chosen}**: {report.device.note}")
    launch = report.launch
    if launch is not None:
        lines.append(
            f"- distributed (torchrun): world size **{launch.world_size}** = {launch.nnodes} node(s) x "
            f"{launch.nproc_per_node} process(es), backend {launch.backend}; {launch.note}"
        )
        for item in report.devices:
            lines.append(f"  - rank {item.get('rank')}: {item.get('host')}, {item.get('device')} ({item.get('name')})")
        if launch.node_rank > 0:
            lines.append(f"- MLflow: node 0's gate opens and fills the run; this is node {launch.node_rank}")
            return "\n".join(lines)
    link = _run_link(report.tracking_uri, report.experiment_id, run.run_id)
    lines.append(f"- MLflow: {report.tracking_uri}, experiment `{report.experiment}`, run {link}")
    lines.append(f"- model: `{run.model_uri or 'none logged'}`")
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report.timings.items())
    lines.append(f"- time: training command {run.seconds:.1f} s; by phase: {phases}")
    lines.append("")
    metrics = sorted(run.metrics.items(), key=lambda item: (not item[0].startswith("holdout"), item[0]))
    lines.append(gha.md_table(["metric", "value"], [[name, _fmt(value)] for name, value in metrics]))
    if report.repro_checked:
        second = report.runs[1]
        lines += ["", "#### Reproducibility (same seed, two runs)", ""]
        rows = []
        for name in sorted(set(run.metrics) | set(second.metrics)):
            a, b = run.metrics.get(name, float("nan")), second.metrics.get(name, float("nan"))
            verdict = "❌" if name in report.repro_differences else "✅"
            rows.append([name, _fmt(a), _fmt(b), _fmt(abs(a - b)), verdict])
        lines.append(gha.md_table(["metric", f"run {run.run_id[:8]}", f"run {second.run_id[:8]}", "|diff|", ""], rows))
    lineage = sorted(report.tags.items())[:LINEAGE_ROWS]
    lines += [
        "",
        "<details><summary>Lineage tags</summary>",
        "",
        gha.md_table(["tag", "value"], [[k, f"`{v}`"] for k, v in lineage]),
        "",
        "</details>",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mlgate.train import settings_of, train

    loaded = with_distributed_overrides(load_config(args.config), args)
    tracking_uri = require_tracking_uri(args.tracking_uri)
    outputs_file = outputs_path(args, loaded.root, OUTPUTS_FILE)
    try:
        report = train(
            loaded,
            profile=args.profile,
            tracking_uri=tracking_uri,
            device=args.device,
            require_gpu=args.require_gpu,
            repro_check=args.repro_check,
            pull_data=not args.no_dvc_pull,
            dvc_remote_url=args.dvc_remote_url,
        )
    except GateFailed as failure:
        gha.add_summary(f"### mlgate train: ❌ failed\n\n```text\n{failure.message}\n```\n")
        raise
    run = report.main
    gha.add_summary(render(report))
    timings = {k: round(v, 3) for k, v in report.timings.items()}
    print(f"mlgate train: timings {json.dumps(timings, sort_keys=True)}")
    print(
        f"mlgate train: run {run.run_id}, model {run.model_uri}, device {report.device.chosen} ({report.device.note})"
    )
    if report.device.chosen == "cpu" and report.device.note.startswith("no GPU"):
        gha.annotation("warning", report.device.note, title="mlgate train")
    launch = report.launch
    outputs: dict[str, object] = {
        "world-size": launch.world_size if launch else 1,
        "run-id": run.run_id,
        "model-uri": run.model_uri or "",
        "experiment-id": report.experiment_id,
        "profile": report.profile,
        "device": report.device.chosen,
        "metrics": run.metrics,
        "timings": timings,
        "reproducible": (not report.repro_differences) if report.repro_checked else None,
    }
    gha.set_outputs(outputs, json_file=outputs_file)
    if report.repro_differences:
        detail = "; ".join(f"{name}: {_fmt(a)} vs {_fmt(b)}" for name, (a, b) in report.repro_differences.items())
        settings = settings_of(loaded)
        raise GateFailed(
            f"two runs with seed {settings.seed} differ by more than "
            f"train.repro_tolerance={settings.repro_tolerance:g}: {detail}",
            hint="set train.deterministic: true, seed every source of randomness (mlgate_runtime.setup()), "
            "or raise train.repro_tolerance",
            file=str(loaded.path),
            line=loaded.line_of("train", "repro_tolerance") or loaded.line_of("train"),
        )
    return 0
