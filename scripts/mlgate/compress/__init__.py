"""The compress gate: smaller, faster ONNX variants of the candidate, measured, budgeted and re-tested.

The variants are built and measured in the project venv (`mlgate.compress.worker`, which needs the
model's own libraries); this side prepares that run, then picks the smallest variant within every
budget of `compress.budgets` that also passes the project's model tests (`mlgate.modeltest`, the same
checks `mlgate test-model` runs), trying the next one when a variant fails them. Imports nothing heavy.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mlgate.config import CompressConfig, LoadedConfig
from mlgate.dvcio import pulling
from mlgate.errors import ConfigError, InputError, MlgateError, ToolError
from mlgate.extras import compress_libraries, require
from mlgate.mlflowio import MlflowHandle, connect
from mlgate.modeltest import ModelTestReport, project_process_env, run_model_tests
from mlgate.procio import stream
from mlgate.projenv import ensure_gate_packages, ensure_project_env, importable

WORKER = "mlgate.compress.worker"
SELECTED_TAG = "mlgate.compress.selected"
_ERRORS: dict[str, type[MlgateError]] = {cls.__name__: cls for cls in (ConfigError, InputError, ToolError)}


@dataclass
class Attempt:
    """One variant put through the model tests."""

    name: str
    model_uri: str
    passed: bool
    failed: list[str] = field(default_factory=list)
    junit_path: Path | None = None
    evidence: dict[str, object] = field(default_factory=dict)


@dataclass
class CompressResult:
    report: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    selected: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def variants(self) -> list[dict[str, Any]]:
        return list(self.report.get("variants") or [])


def settings_of(loaded: LoadedConfig) -> CompressConfig:
    if loaded.model.compress is None:
        raise ConfigError(
            f"{loaded.path}: no `compress` section, so there is nothing to compress",
            hint="add compress: {methods: [onnx, int8], budgets: {...}} to mlgate.yaml (see docs/compress.md)",
            file=str(loaded.path),
        )
    if loaded.model.model_tests is None:
        raise ConfigError(
            f"{loaded.path}: compress needs model_tests (the holdout, label, score and the checks every variant "
            "must pass), and there is no model_tests section",
            hint="add model_tests (see `mlgate schema`), or remove compress",
            file=str(loaded.path),
            line=loaded.line_of("compress"),
        )
    settings = loaded.model.compress
    if "distill" in settings.methods and settings.distill is None:
        raise ConfigError(
            f"{loaded.path}: compress.methods lists distill, but compress.distill (the student) is absent",
            hint="add compress.distill: {student: {...}} with the keyword arguments of the project's student "
            "builder, or remove distill from compress.methods",
            file=str(loaded.path),
            line=loaded.line_of("compress", "methods"),
        )
    return settings


def sort_key(variant: dict[str, Any], settings: CompressConfig) -> tuple[float, float]:
    """Smallest first, then fastest at the budget's batch (or the largest batch measured)."""
    batch = str(settings.budgets.latency.batch) if settings.budgets.latency else str(max(settings.latency_batches))
    latency = variant.get("latency", {}).get(batch, {}).get("pyfunc", {}).get("p95_ms", float("inf"))
    return float(variant["size_bytes"]), float(latency)


def within_budgets(variant: dict[str, Any]) -> bool:
    return all(result["passed"] for result in variant.get("budgets", []))


def run_worker(
    loaded: LoadedConfig, python: Path | None, candidate_uri: str, tracking_uri: str, workdir: Path
) -> dict[str, Any]:
    env = project_process_env(python, tracking_uri)
    env["TMPDIR"] = str(workdir / "tmp")
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    report_path = workdir / "report.json"
    command = [
        str(python or sys.executable), "-m", WORKER, "--config", str(loaded.path.resolve()),
        "--candidate", candidate_uri, "--workdir", str(workdir), "--report", str(report_path),
    ]  # fmt: skip
    code, tail, _ = stream(
        command, loaded.root, env, workdir / "worker.log", what="python",
        hint="the project venv has no python; check environment.install",
    )  # fmt: skip
    raw = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    if raw and raw.get("error"):
        error = raw["error"]
        cls = _ERRORS.get(error.get("kind", ""), ToolError)
        raise cls(error["message"], hint=error.get("hint"), file=error.get("file"), line=error.get("line"))
    if raw is None or code != 0:
        raise ToolError(
            f"the compress worker stopped with exit code {code} before reporting; last lines:\n"
            + "\n".join(tail[-15:]),
            hint=f"run it locally: mlgate compress --model {candidate_uri}",
        )
    return dict(raw)


def failed_checks(report: ModelTestReport) -> list[str]:
    names = [str(check["id"]) for check in report.checks if check["outcome"] == "failed"]
    names += [str(test["nodeid"]) for test in report.errored_checks + report.user_failures]
    return names


def run_compress(
    loaded: LoadedConfig,
    *,
    candidate_uri: str,
    tracking_uri: str,
    junit_dir: Path,
    pull_data: bool = True,
    dvc_remote_url: str | None = None,
) -> CompressResult:
    """Build, measure and log the variants, then select one; never raises GateFailed (the caller does)."""
    settings = settings_of(loaded)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    assert loaded.model.model_tests is not None
    names = sorted({loaded.model.model_tests.holdout, settings.quantize.calibration.source}
                   & set(loaded.model.data.sources))  # fmt: skip
    # The holdout and calibration data come down (another process) while MLflow and the venv are set up.
    with pulling(loaded, names, dvc_remote_url, enabled=pull_data):
        server = connect(tracking_uri).reached()
        python = ensure_project_env(loaded)
        if python is None:
            require("onnx", "onnxruntime", "pytest", "pandas", "numpy")
        else:
            found = importable(python, ["torch", "sklearn"])
            ensure_gate_packages(loaded, python, compress_libraries(settings.methods, found), "compress")
        timings["project_env"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="mlgate-compress-") as tmp:
        started = time.perf_counter()
        report = run_worker(loaded, python, candidate_uri, tracking_uri, Path(tmp))
        timings["build_and_measure"] = time.perf_counter() - started
    result = CompressResult(report=report, timings=timings)
    ranked = sorted(
        (v for v in result.variants if v.get("candidate") and within_budgets(v)), key=lambda v: sort_key(v, settings)
    )
    started = time.perf_counter()
    for variant in ranked:
        print(f"mlgate compress: model tests of {variant['name']} ({variant['model_uri']})", flush=True)
        junit = junit_dir / f"compress-{variant['name']}.xml"
        tested = run_model_tests(loaded, candidate_uri=variant["model_uri"], tracking_uri=tracking_uri,
                                 junit_path=junit, pull_data=False)  # fmt: skip
        attempt = Attempt(variant["name"], variant["model_uri"], tested.passed, failed_checks(tested), junit,
                          tested.evidence())  # fmt: skip
        result.attempts.append(attempt)
        variant["model_tests"] = "passed" if tested.passed else f"failed: {', '.join(attempt.failed[:6])}"
        if tested.passed:
            result.selected = variant
            break
    timings["model_tests"] = time.perf_counter() - started
    record(result, server)
    return result


def record(result: CompressResult, server: MlflowHandle) -> None:
    """Tag the selected variant (logged model and run) and log the whole report to the compress run; each call
    bounded and retried."""
    client = server.client
    run_id = str(result.report["run_id"])
    if result.selected is not None:
        model_id = str(result.selected["model_uri"]).split("/", 1)[1]
        selected = str(result.selected["name"])
        tag_model = partial(client.set_logged_model_tags, model_id, {SELECTED_TAG: "true"})
        server.call("tagging the selected model", tag_model)
        server.call("tagging the compress run", lambda: client.set_tag(run_id, SELECTED_TAG, selected))
    else:
        server.call("tagging the compress run", lambda: client.set_tag(run_id, SELECTED_TAG, "none"))
    summary = {**result.report, "attempts": [vars(a) | {"junit_path": str(a.junit_path)} for a in result.attempts]}
    server.call("logging the compress report", lambda: client.log_dict(run_id, summary, "compress/report.json"))


__all__ = ["Attempt", "CompressResult", "run_compress"]
