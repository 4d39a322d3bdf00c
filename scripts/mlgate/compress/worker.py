"""The compress gate's work in the project venv: build the variants, measure them, log each to MLflow.

Started by `mlgate compress` as `python -m mlgate.compress.worker` with the project's libraries (torch,
scikit-learn, onnxruntime) at hand; writes a JSON report that the gate reads back (or `{"error": ...}` for
an expected failure, which the gate re-raises with its exit code). The selection, which re-runs the
model tests on the best variants, happens on the gate's side.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlgate.compress import settings_of as settings_of_compress
from mlgate.compress.contract import Candidate, SklearnSubject, TorchSubject, load_candidate
from mlgate.compress.export import Exported, convert_sklearn, export_torch
from mlgate.compress.quantize import choose_mode, operator_counts, quantize
from mlgate.config import LoadedConfig, load_config
from mlgate.errors import ConfigError, InputError, MlgateError
from mlgate.modeltest.context import (
    Holdout,
    ScoredModel,
    classification_metrics,
    latency_ms,
    load_holdout,
    load_model,
    pinned_threads,
)
from mlgate.modeltest.settings import settings_of
from mlgate.sources import load_source

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "_runtime"
WARMUP_CALLS = 3
EXAMPLE_ROWS = 8


@dataclass
class Build:
    """One variant before measurement: its graph, the torch network it came from, and how it was made."""

    name: str
    methods: list[str]
    onnx_path: Path
    network: Any = None  # the torch network of the graph (int8: its FP32 network), None for scikit-learn
    notes: list[str] = field(default_factory=list)
    candidate: bool = True  # offered for selection (the FP32 export is built for int8 even when `onnx` is not asked)


def count_parameters(path: Path) -> tuple[int, int]:
    """(parameters, bytes of the weights) of an ONNX graph: its initializers (scales and zero points excluded),
    plus the float arrays that ai.onnx.ml operators (scikit-learn's linear models, trees) hold as attributes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    parameters = weight_bytes = 0
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.FLOATS and len(attribute.floats) > 1:
                parameters += len(attribute.floats)
                weight_bytes += 4 * len(attribute.floats)
    for tensor in model.graph.initializer:
        if tensor.name.endswith(("_scale", "_zero_point")):
            continue
        array = numpy_helper.to_array(tensor)
        if array.size <= 1:
            continue
        parameters += int(array.size)
        weight_bytes += int(array.nbytes)
    return parameters, weight_bytes


def _time_calls(call: Any, repeats: int) -> dict[str, float]:
    for _ in range(WARMUP_CALLS):
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000.0)
    return {"p50_ms": float(np.percentile(samples, 50)), "p95_ms": float(np.percentile(samples, 95))}


def _rows(frame: pd.DataFrame, batch: int) -> pd.DataFrame:
    return frame.iloc[np.arange(batch) % len(frame)] if batch > len(frame) else frame.iloc[:batch]


class Worker:
    def __init__(self, loaded: LoadedConfig, candidate_uri: str, workdir: Path) -> None:
        self.loaded = loaded
        self.settings = settings_of_compress(loaded)
        self.workdir = workdir
        self.notes: list[str] = []
        self.holdout: Holdout = load_holdout(loaded)
        self.candidate: Candidate = load_candidate(candidate_uri, workdir / "candidate")
        self.original = load_model(loaded, str(self.candidate.local_dir))
        self.original.uri = candidate_uri
        self.original_scores = self.original.holdout_scores(self.holdout)
        at_precision = settings_of(loaded).performance.at_precision
        self.at_precision = at_precision
        self.original_metrics = classification_metrics(
            self.holdout.labels, self.original_scores, self.original.threshold, at_precision
        )

    # -- building ---------------------------------------------------------------------------------
    def features(self, frame: pd.DataFrame) -> np.ndarray:
        subject = self.candidate.subject
        assert isinstance(subject, TorchSubject)
        matrix = np.asarray(subject.features(self.original.inputs(frame)), dtype=np.float32)
        if matrix.ndim < 2 or len(matrix) != len(frame):
            raise InputError(
                f"{self.candidate.uri}: mlgate_compress()['features'] returned shape {matrix.shape} for "
                f"{len(frame)} rows; it must return one row per input row (at least 2-D)",
                hint="return the array the network's forward takes, e.g. preprocessor.transform(frame)",
            )
        return matrix

    def builds(self) -> list[Build]:
        methods = self.settings.methods
        subject = self.candidate.subject
        fp32: list[Build] = []
        if isinstance(subject, SklearnSubject):
            path = self.workdir / "onnx-fp32.onnx"
            convert_sklearn(subject.estimator, subject.columns, path)
            fp32.append(Build("onnx-fp32", ["onnx"], path, candidate="onnx" in methods))
            for method in ("prune", "distill"):
                if method in methods:
                    self.notes.append(f"{method}: skipped, it needs a torch network and the model is scikit-learn")
        else:
            example = torch_tensor(self.features(self.holdout.frame.head(EXAMPLE_ROWS)))
            exported = export_torch(subject.network, example, self.workdir / "onnx-fp32.onnx")
            build = Build("onnx-fp32", ["onnx"], exported.path, subject.network, candidate="onnx" in methods)
            if exported.note:
                build.notes.append(exported.note)
                self.notes.append(f"onnx-fp32: {exported.note}")
            fp32.append(build)
            fp32 += self.torch_builds(subject, example)
        variants = list(fp32)
        if "int8" in methods:
            for source in fp32:
                quantized = self.quantized(source)
                if quantized is not None:
                    variants.append(quantized)
        return variants

    def torch_builds(self, subject: TorchSubject, example: Any) -> list[Build]:
        """Pruned and distilled networks (prune -> distil), each exported to FP32 ONNX."""
        methods = self.settings.methods
        if "prune" not in methods and "distill" not in methods:
            return []
        from mlgate.compress import shrink

        made: list[Build] = []
        for name, steps, network, notes in shrink.networks(subject, self.settings, example):
            exported: Exported = export_torch(network, example, self.workdir / f"{name}.onnx")
            build = Build(name, steps, exported.path, network, notes=list(notes))
            if exported.note:
                build.notes.append(exported.note)
            made.append(build)
        return made

    def calibration_frame(self, rows: int | None = None) -> pd.DataFrame:
        """Seeded rows of compress.quantize.calibration.source (the training data by default)."""
        calibration = self.settings.quantize.calibration
        sources = self.loaded.model.data.sources
        if calibration.source not in sources:
            raise ConfigError(
                f"{self.loaded.path}: compress.quantize.calibration.source names {calibration.source!r}, which is "
                f"not a data source; sources: {', '.join(sorted(sources)) or 'none'}",
                hint="name the training data's source under data.sources",
                file=str(self.loaded.path),
                line=self.loaded.line_of("compress", "quantize", "calibration", "source")
                or self.loaded.line_of("compress"),
            )
        frame = load_source(self.loaded, calibration.source).frame
        wanted = rows or calibration.rows
        if len(frame) > wanted:
            frame = frame.sample(n=wanted, random_state=settings_of(self.loaded).seed)
        return frame.reset_index(drop=True)

    def quantized(self, source: Build) -> Build | None:
        ops = operator_counts(source.onnx_path)
        mode, why = choose_mode(ops, self.settings.quantize.mode)
        name = source.name.replace("-fp32", "-int8")
        if mode is None:
            self.notes.append(f"{name}: not built, {why}")
            return None
        calibration = None
        what = f"data source {self.settings.quantize.calibration.source!r}"
        if mode == "static":
            if isinstance(self.candidate.subject, SklearnSubject):
                self.notes.append(f"{name}: not built, static quantization needs a network's feature matrix")
                return None
            calibration = self.features(self.calibration_frame())
        done = quantize(source.onnx_path, self.workdir / f"{name}.onnx", mode, calibration=calibration,
                        calibration_what=what)  # fmt: skip
        return Build(name, [*source.methods, f"int8-{done.mode}"], done.path, source.network, [why])

    # -- logging ---------------------------------------------------------------------------------
    def variant_model(self) -> Any:
        # A top-level module (shipped in each variant's code_paths), so the pickled variant loads without mlgate.
        if str(RUNTIME_DIR) not in sys.path:
            sys.path.insert(0, str(RUNTIME_DIR))
        OnnxVariant = importlib.import_module("mlgate_onnx").OnnxVariant

        subject = self.candidate.subject
        threads = self.settings.threads
        if isinstance(subject, SklearnSubject):
            return OnnxVariant("sklearn", threads, columns=subject.columns, predict_fn=subject.predict_fn)
        return OnnxVariant("network", threads, features=subject.features, outputs=subject.outputs)

    def requirements(self) -> list[str]:
        from importlib.metadata import version

        listed = self.candidate.local_dir / "requirements.txt"
        lines = listed.read_text(encoding="utf-8").splitlines() if listed.is_file() else ["mlflow", "pandas", "numpy"]
        kept = [line for line in lines if line.strip() and not line.lstrip().startswith(("#", "onnxruntime"))]
        return [*kept, f"onnxruntime=={version('onnxruntime')}"]

    def input_example(self) -> Any:
        try:
            return self.original.pyfunc.metadata.load_input_example(str(self.candidate.local_dir))
        except Exception:
            return None

    def log(self, build: Build, model_object: Any) -> str:
        import mlflow

        metadata = dict(self.original.pyfunc.metadata.metadata or {})
        metadata["mlgate_compress"] = {"variant": build.name, "methods": build.methods, "source": self.candidate.uri}
        info = mlflow.pyfunc.log_model(
            name=build.name,
            python_model=model_object,
            artifacts={"onnx_model": str(build.onnx_path)},
            code_paths=[*map(str, self.candidate.code_paths), str(RUNTIME_DIR / "mlgate_onnx.py")],
            signature=self.original.pyfunc.metadata.signature,
            input_example=self.input_example(),
            pip_requirements=self.requirements(),
            metadata=metadata,
        )
        mlflow.set_logged_model_tags(
            info.model_id,
            {"mlgate.compress.variant": build.name, "mlgate.compress.source": self.candidate.uri},
        )
        return f"models:/{info.model_id}"

    # -- measuring -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import mlflow

        started = time.perf_counter()
        builds = self.builds()
        build_seconds = time.perf_counter() - started
        experiment_id = experiment_of(self.candidate.uri, self.loaded)
        model_object = self.variant_model()
        variants: list[dict[str, Any]] = []
        scored: list[ScoredModel] = []
        with mlflow.start_run(experiment_id=experiment_id, run_name="compress") as run:
            mlflow.set_tags({"mlgate.gate": "compress", "mlgate.compress.source": self.candidate.uri})
            for build in builds:
                uri = self.log(build, model_object)
                loaded_dir = self.workdir / "loaded" / build.name
                loaded_dir.mkdir(parents=True, exist_ok=True)
                model = load_model(self.loaded, uri, dst_path=str(loaded_dir))
                scores = model.holdout_scores(self.holdout)
                scored.append(model)
                variants.append(self.measure_quality(build, uri, scores))
            self.measure_latency(builds, scored, variants)
            export = next((entry for entry in variants if entry["name"] == "onnx-fp32"), None)
            for build, entry in zip(builds, variants, strict=True):
                entry["budgets"] = self.budget_results(entry)
                if export is not None and entry is not export and "onnx" in entry["methods"]:
                    # A quantized copy of an export that strays from the original is no better than its source.
                    entry["budgets"].append({
                        "budget": "parity of the FP32 export it was quantized from",
                        "value": export["max_abs_diff"],
                        "passed": export["parity"]["passed"],
                    })  # fmt: skip
                mlflow.log_dict(entry, f"compress/{build.name}.json")
                mlflow.log_metrics(
                    {f"{build.name}.size_mb": entry["size_mb"], f"{build.name}.roc_auc": entry["metrics"]["roc_auc"]}
                )
            run_id = run.info.run_id
        original = self.original_report()
        return {
            "candidate": self.candidate.uri,
            "kind": self.candidate.kind,
            "threads": self.settings.threads,
            "threshold": self.original.threshold,
            "holdout_rows": self.holdout.rows,
            "run_id": run_id,
            "experiment_id": experiment_id,
            "build_seconds": build_seconds,
            "original": original,
            "variants": variants,
            "notes": self.notes,
            "budgets": self.settings.budgets.model_dump(mode="json"),
        }

    def measure_quality(self, build: Build, uri: str, scores: np.ndarray) -> dict[str, Any]:
        threshold = self.original.threshold
        metrics = classification_metrics(self.holdout.labels, scores, threshold, self.at_precision)
        flips = (scores >= threshold) != (self.original_scores >= threshold)
        parameters, weight_bytes = count_parameters(build.onnx_path)
        entry: dict[str, Any] = {
            "name": build.name,
            "methods": build.methods,
            "model_uri": uri,
            "candidate": build.candidate,
            "notes": build.notes,
            "size_bytes": build.onnx_path.stat().st_size,
            "size_mb": build.onnx_path.stat().st_size / 1e6,
            "parameters": parameters,
            "weight_bytes": weight_bytes,
            "metrics": metrics,
            "metric_deltas": {name: metrics[name] - self.original_metrics[name] for name in metrics},
            "max_abs_diff": float(np.max(np.abs(scores - self.original_scores))),
            "flip_rate": float(flips.mean()),
            "flipped_rows": int(flips.sum()),
        }
        if build.name == "onnx-fp32":
            parity = self.settings.parity
            entry["parity"] = {
                "max_abs_diff": parity.max_abs_diff,
                "max_flip_rate": parity.max_flip_rate,
                "passed": entry["max_abs_diff"] <= parity.max_abs_diff and entry["flip_rate"] <= parity.max_flip_rate,
            }
        return entry

    def batches(self) -> list[int]:
        batches = list(self.settings.latency_batches)
        budget = self.settings.budgets.latency
        if budget is not None and budget.batch not in batches:
            batches.append(budget.batch)
        return sorted(set(batches))

    def measure_latency(self, builds: list[Build], scored: list[ScoredModel], variants: list[dict[str, Any]]) -> None:
        """p50/p95 of each variant's pyfunc predict (the original's beside it), of its graph alone on onnxruntime,
        and of its torch network in eager mode, at each batch, the threads pinned to compress.threads."""
        threads, repeats = self.settings.threads, self.settings.latency_repeats
        self.original_latency: dict[str, Any] = {}
        for entry in variants:
            entry["latency"] = {}
        for batch in self.batches():
            measured, pinned = latency_ms([self.original, *scored], self.holdout.frame, batch, repeats, threads)
            self.original_latency[str(batch)] = {"pyfunc": measured[0]}
            rows = _rows(self.holdout.frame, batch)
            matrix = self.features(rows) if isinstance(self.candidate.subject, TorchSubject) else None
            for build, model, entry, pyfunc in zip(builds, scored, variants, measured[1:], strict=True):
                at_batch: dict[str, Any] = {"pyfunc": pyfunc}
                python_model = model.pyfunc.unwrap_python_model()  # type: ignore[no-untyped-call]
                if matrix is not None:
                    with pinned_threads(threads):
                        at_batch["onnxruntime"] = _time_calls(lambda m=python_model, x=matrix: m.run(x), repeats)
                        at_batch["torch"] = self.torch_latency(build.network, matrix, repeats)
                else:
                    feeds = python_model.feeds(rows)
                    session = python_model._session
                    at_batch["onnxruntime"] = _time_calls(lambda s=session, f=feeds: s.run(None, f), repeats)
                entry["latency"][str(batch)] = at_batch
            self.pinned = pinned

    @staticmethod
    def torch_latency(network: Any, matrix: np.ndarray, repeats: int) -> dict[str, float] | None:
        if network is None:
            return None
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(matrix))
        with torch.inference_mode():
            return _time_calls(lambda: network(tensor), repeats)

    def budget_results(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        budgets = self.settings.budgets
        results: list[dict[str, Any]] = []
        if budgets.max_size_mb is not None:
            results.append({
                "budget": f"size <= {budgets.max_size_mb:g} MB",
                "value": entry["size_mb"],
                "passed": entry["size_mb"] <= budgets.max_size_mb,
            })  # fmt: skip
        if budgets.latency is not None:
            p95 = entry["latency"][str(budgets.latency.batch)]["pyfunc"]["p95_ms"]
            results.append({
                "budget": f"p95 <= {budgets.latency.p95_ms:g} ms at batch {budgets.latency.batch}",
                "value": p95,
                "passed": p95 <= budgets.latency.p95_ms,
            })  # fmt: skip
        for metric, allowed in budgets.max_metric_drop.items():
            drop = -entry["metric_deltas"][metric]
            results.append({"budget": f"{metric} drop <= {allowed:g}", "value": drop, "passed": drop <= allowed})
        if "parity" in entry:
            parity = entry["parity"]
            results.append({
                "budget": f"parity: max |diff| <= {parity['max_abs_diff']:g}, flips <= {parity['max_flip_rate']:g}",
                "value": entry["max_abs_diff"],
                "passed": parity["passed"],
            })  # fmt: skip
        return results

    def original_report(self) -> dict[str, Any]:
        subject = self.candidate.subject
        parameters = None
        if isinstance(subject, TorchSubject):
            parameters = int(sum(p.numel() for p in subject.network.parameters()))
        original_torch: dict[str, Any] = {}
        for batch, values in self.original_latency.items():
            original_torch[batch] = values
        return {
            "uri": self.candidate.uri,
            "parameters": parameters,
            "metrics": self.original_metrics,
            "latency": original_torch,
            "pinned": getattr(self, "pinned", []),
        }


def torch_tensor(matrix: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))


def experiment_of(uri: str, loaded: LoadedConfig) -> str:
    """The experiment of the candidate's run, so the variants sit beside it; else the project's experiment."""
    import mlflow

    # Any answer but an experiment (a runs:/ URI of a deleted run, a server without logged models) falls back to
    # the project's experiment.
    with contextlib.suppress(Exception):
        if uri.startswith("models:/m-"):
            return str(mlflow.get_logged_model(uri.split("/", 1)[1].split("/", 1)[0]).experiment_id)
        if uri.startswith("runs:/"):
            return str(mlflow.get_run(uri.split("/")[1]).info.experiment_id)
    name = (loaded.model.train.experiment if loaded.model.train else None) or loaded.model.project
    experiment = mlflow.get_experiment_by_name(name)
    return str(experiment.experiment_id if experiment else mlflow.create_experiment(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlgate.compress.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args(argv)
    report_path = Path(args.report)
    import logging

    import mlflow  # noqa: F401 - configures MLflow's loggers, which are quieted next

    # MLflow's notices (the CloudPickle caution every python_model gets, progress bars) are not the gate's report.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        loaded = load_config(args.config)
        os.chdir(loaded.root)
        report = Worker(loaded, args.candidate, Path(args.workdir)).run()
    except MlgateError as error:
        kind = type(error).__name__
        payload = {"kind": kind, "message": str(error), "hint": error.hint, "file": error.file, "line": error.line}
        report_path.write_text(json.dumps({"error": payload}), encoding="utf-8")
        return 1
    report_path.write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
