"""The compress gate end to end: `mlgate compress` (the real CLI, as a subprocess) on tiny models in a sqlite
MLflow store, with the variants built and measured by `python -m mlgate.compress.worker` in this venv (the
projects have no environment.install) and re-tested by the model-test gate.

The models come from compress_models: an MLP and a CNN implementing the compress contract, scikit-learn
pipelines, and the bad inputs (an op no exporter translates, no contract, a step without a converter). The
tabular data follow a known logistic relation (2,000 rows per split), the images carry a bar or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import compress_models
import numpy as np
import pandas as pd
import pytest
import yaml

ROWS = 2000
MLGATE = Path(sys.executable).parent / "mlgate"
VARIANT_TAG, SELECTED_TAG = "mlgate.compress.variant", "mlgate.compress.selected"
GATE_FAILED, CONFIG_ERROR, INPUT_ERROR = 1, 2, 3


# --- data, models and the MLflow store ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    compress_models.tabular_frame(ROWS, 1).to_csv(root / "tab-train.csv", index=False)
    compress_models.tabular_frame(ROWS, 2).to_csv(root / "tab-test.csv", index=False)
    images = compress_models.image_frame(ROWS, 1)
    images.to_csv(root / "img-train.csv", index=False)
    compress_models.image_frame(ROWS, 2).to_csv(root / "img-test.csv", index=False)
    images.head(5).to_csv(root / "img-tiny.csv", index=False)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[SimpleNamespace]:
    """One sqlite store holding every model of the module, each logged with compress_models in code_paths."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment("toy", artifact_location=(root / "artifacts").as_uri())
    tabular = pd.read_csv(data_dir / "tab-train.csv")
    images = pd.read_csv(data_dir / "img-train.csv")
    originals: dict[str, Any] = {
        "mlp": compress_models.train_mlp(tabular),
        "cnn": compress_models.train_cnn(images),
        "bessel": compress_models.bessel_model(),
        "no-contract": compress_models.no_contract_model(tabular),
    }
    pipelines = {kind: compress_models.fit_sklearn(tabular, kind) for kind in ("logistic", "boosting", "custom")}
    uris: dict[str, str] = {}
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with pytest.MonkeyPatch.context() as patch, mlflow.start_run(experiment_id=experiment):
            patch.setenv("MLFLOW_TRACKING_URI", uri)
            for name, model in originals.items():
                example = images if name == "cnn" else tabular
                uris[name] = compress_models.log_pyfunc(model, name, example.head(20)).model_uri
            for kind, pipeline in pipelines.items():
                uris[kind] = compress_models.log_sklearn(pipeline, kind, tabular.head(20)).model_uri
        yield SimpleNamespace(uri=uri, models=uris, originals=originals, pipelines=pipelines)
    finally:
        mlflow.set_tracking_uri(previous)


def project_config(data_dir: Path, kind: str) -> dict[str, Any]:
    """mlgate.yaml of a project over the tabular data (`tabular`: the torch MLP, `sklearn`: predict_proba's
    column 1 is the score) or the images (`image`)."""
    prefix = "img" if kind == "image" else "tab"
    sources = {
        split: {"path": str(data_dir / f"{prefix}-{split}.csv"), "allow_outside_project": True}
        for split in ("train", "test")
    }
    sources["tiny"] = {"path": str(data_dir / "img-tiny.csv"), "allow_outside_project": True}
    if kind == "image":
        behavioral: dict[str, Any] = {
            "minimum_functionality": [
                {"name": "a blank image has no bar", "set": dict.fromkeys(compress_models.PIXELS, 0.0),
                 "expect": 0, "rows": 50},
            ]
        }  # fmt: skip
        metrics = {"roc_auc": 0.85}
    else:
        behavioral = {
            "minimum_functionality": [
                {"name": "a clearly benign row is not flagged", "set": {"f0": -3.0, "f1": 3.0, "f2": -3.0},
                 "expect": 0, "rows": 50},
            ],
            "directional": [
                {"name": "a larger f0 raises the score", "column": "f0", "perturb": {"add": 1.0},
                 "expect": "increase", "rows": 200},
            ],
        }  # fmt: skip
        metrics = {"roc_auc": 0.8}
    return {
        "version": 1,
        "project": f"compress-{kind}",
        "data": {"sources": sources},
        "model_tests": {
            "holdout": "test",
            "label": "label",
            "score": 1 if kind == "sklearn" else "score",
            "threshold": 0.5,
            "performance": {"metrics": metrics},
            "behavioral": behavioral,
        },
        "compress": {
            "methods": ["onnx", "int8"],
            "threads": 1,
            "quantize": {"calibration": {"source": "train", "rows": 256}},
            "budgets": {"max_size_mb": 5, "max_metric_drop": {"roc_auc": 0.01}},
            "latency_batches": [1, 200],
            "latency_repeats": 3,
        },
    }


@pytest.fixture(scope="module")
def make_project(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Callable[..., Path]:
    """A project folder with an mlgate.yaml of `kind`, changed by `edit` -> the mlgate.yaml's path."""

    def make(kind: str, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
        config = project_config(data_dir, kind)
        if edit is not None:
            edit(config)
        root = tmp_path_factory.mktemp(f"project-{kind}")
        path = root / "mlgate.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    return make


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, Any] | None

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def hint(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("hint: ")]
        assert len(lines) == 1, self.text[-3000:]
        return lines[0]


@pytest.fixture(scope="module")
def gate(store: SimpleNamespace) -> Callable[[Path, str], Outcome]:
    """Run `mlgate compress` on the project of `config` with the named model of the store."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GITHUB_", "MLGATE_INPUT_"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    # The model tests' pytest loads mlgate's plugin alone, not the dev venv's others (seconds per run).
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"

    def run(config: Path, model: str) -> Outcome:
        outputs = config.parent / "outputs.json"
        command = [
            str(MLGATE), "compress", "--config", str(config), "--model", store.models[model],
            "--tracking-uri", store.uri, "--no-comment", "--no-dvc-pull", "--outputs-file", str(outputs),
            "--junit-dir", str(config.parent / "reports"),
        ]  # fmt: skip
        done = subprocess.run(command, cwd=config.parent, env=env, capture_output=True, text=True, timeout=600)
        loaded = json.loads(outputs.read_text(encoding="utf-8")) if outputs.is_file() else None
        return Outcome(done.returncode, done.stdout, done.stderr, loaded)

    return run


def assert_fails(outcome: Outcome, code: int, *needles: str) -> None:
    """Exit `code`, one error line naming every needle, a hint, no traceback."""
    assert outcome.code == code, outcome.text[-4000:]
    assert "Traceback" not in outcome.text
    errors = [line for line in outcome.text.splitlines() if "error:" in line and all(n in line for n in needles)]
    assert len(errors) == 1, outcome.text[-4000:]
    outcome.hint()


def variant_tags(store: SimpleNamespace, outcome: Outcome) -> dict[str, dict[str, str]]:
    from mlflow import MlflowClient

    assert outcome.outputs is not None
    client = MlflowClient(store.uri)
    return {
        name: dict(client.get_logged_model(entry["model_uri"].split("/", 1)[1]).tags)
        for name, entry in outcome.outputs["report"].items()
    }


def load_variant(store: SimpleNamespace, uri: str) -> Any:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(previous)


def onnx_ops(store: SimpleNamespace, uri: str) -> set[str]:
    import mlflow
    import onnx

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    finally:
        mlflow.set_tracking_uri(previous)
    (graph,) = [path for path in local.rglob("*.onnx")]
    return {node.op_type for node in onnx.load(str(graph)).graph.node}


def note_of(outcome: Outcome, variant: str) -> str:
    """The notes under the printed table that concern `variant` (`- <variant>: ...`)."""
    return "\n".join(line for line in outcome.stderr.splitlines() if line.startswith(f"- {variant}: "))


# --- the gate runs, started together ------------------------------------------------------------------------
# Each run is a subprocess of up to half a minute (importing torch and MLflow, exporting, measuring, the model
# tests), so the module starts them all at once on a small pool and each test waits for its own. A run has its
# own project folder, outputs file, JUnit folder and temporary folder; the runs share the data files (read
# only) and the store: one sqlite file, which MLflow opens with a 20 s busy timeout so that concurrent writers
# wait for each other, and one artifact root, where each run writes under its own run and model ids.


def tiny_size_budget(config: dict[str, Any]) -> None:
    config["compress"]["budgets"]["max_size_mb"] = 0.000001


def invariance_check(config: dict[str, Any]) -> None:
    config["model_tests"]["behavioral"]["invariance"] = [
        {"name": "a thousandth more f0 barely moves the score", "column": "f0", "perturb": {"add": 0.001},
         "tolerance": 0.001, "pass_rate": 0.99, "rows": 1000},
    ]  # fmt: skip


def strict_parity(config: dict[str, Any]) -> None:
    config["compress"]["parity"] = {"max_abs_diff": 1e-9, "max_flip_rate": 0.0}


def risky_row(config: dict[str, Any]) -> None:
    config["model_tests"]["behavioral"]["minimum_functionality"] = [
        {"name": "a clearly risky row is not flagged", "set": {"f0": 4.0, "f1": -4.0, "f2": 4.0},
         "expect": 0, "rows": 50},
    ]  # fmt: skip


def tiny_calibration(config: dict[str, Any]) -> None:
    config["compress"]["quantize"]["calibration"]["source"] = "tiny"


def no_model_tests(config: dict[str, Any]) -> None:
    config.pop("model_tests")


def distill_without_student(config: dict[str, Any]) -> None:
    config["compress"]["methods"] = ["onnx", "distill"]


# name -> (project kind, model of the store, edit of mlgate.yaml), slowest first (as measured on 2 cores), so
# the short runs fill the pool's tail instead of a long one starting last.
RUNS: dict[str, tuple[str, str, Callable[[dict[str, Any]], None] | None]] = {
    "invariance": ("tabular", "mlp", invariance_check),
    "cnn": ("image", "cnn", None),
    "mlp": ("tabular", "mlp", None),
    "logistic": ("sklearn", "logistic", None),
    "boosting": ("sklearn", "boosting", None),
    "tiny-budget": ("tabular", "mlp", tiny_size_budget),
    "strict": ("tabular", "mlp", strict_parity),
    "risky": ("tabular", "mlp", risky_row),
    "bessel": ("tabular", "bessel", None),
    "tiny-calibration": ("image", "cnn", tiny_calibration),
    "custom": ("sklearn", "custom", None),
    "no-contract": ("tabular", "no-contract", None),
    "no-model-tests": ("tabular", "mlp", no_model_tests),
    "distill": ("tabular", "mlp", distill_without_student),
}
# The runs are CPU-bound: on 2 cores the module took about the same with 2, 3 or 4 at once (91-95 s, against
# 241 s one after another); 3 keeps both cores busy while a run waits on its files and child processes.
WORKERS = 3


@pytest.fixture(scope="module")
def runs(
    make_project: Callable[..., Path], gate: Callable[[Path, str], Outcome]
) -> Iterator[dict[str, Future[Outcome]]]:
    """Every gate run of the module, submitted at once: name -> its future Outcome."""
    projects = {name: (make_project(kind, edit), model) for name, (kind, model, edit) in RUNS.items()}
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mlgate-compress")
    try:
        yield {name: pool.submit(gate, config, model) for name, (config, model) in projects.items()}
    finally:
        # With only some tests selected (-k), the runs not started yet are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def mlp_run(runs: dict[str, Future[Outcome]]) -> Outcome:
    return runs["mlp"].result()


@pytest.fixture(scope="module")
def cnn_run(runs: dict[str, Future[Outcome]]) -> Outcome:
    return runs["cnn"].result()


@pytest.fixture(scope="module", params=["logistic", "boosting"])
def sklearn_run(request: pytest.FixtureRequest, runs: dict[str, Future[Outcome]]) -> tuple[str, Outcome]:
    return request.param, runs[request.param].result()


# --- the MLP: dynamic INT8 ---------------------------------------------------------------------------------


def test_mlp_builds_fp32_and_dynamic_int8_and_selects_the_smaller(mlp_run: Outcome) -> None:
    assert mlp_run.code == 0, mlp_run.text[-4000:]
    outputs = mlp_run.outputs
    assert outputs is not None and outputs["selected"] is True
    assert set(outputs["report"]) == {"onnx-fp32", "onnx-int8"}
    assert outputs["variant"] == "onnx-int8"
    assert outputs["report"]["onnx-int8"]["size_mb"] < outputs["report"]["onnx-fp32"]["size_mb"]
    assert outputs["model-uri"] == outputs["report"]["onnx-int8"]["model_uri"]
    note = note_of(mlp_run, "onnx-int8")
    assert "dynamic:" in note and "no Conv" in note, mlp_run.stderr[-3000:]
    assert f"selected onnx-int8 {outputs['model-uri']}" in mlp_run.stdout


def test_mlp_fp32_export_keeps_parity(store: SimpleNamespace, mlp_run: Outcome) -> None:
    import mlflow

    assert mlp_run.outputs is not None
    client = mlflow.MlflowClient(store.uri)
    report = client.download_artifacts(mlp_run.outputs["run-id"], "compress/onnx-fp32.json")
    fp32 = json.loads(Path(report).read_text(encoding="utf-8"))
    assert fp32["max_abs_diff"] < 1e-5
    assert fp32["flipped_rows"] == 0
    assert fp32["parity"]["passed"] is True


def test_every_variant_is_logged_and_only_the_selected_one_tagged(store: SimpleNamespace, mlp_run: Outcome) -> None:
    tags = variant_tags(store, mlp_run)
    assert {name: entry.get(VARIANT_TAG) for name, entry in tags.items()} == {
        "onnx-fp32": "onnx-fp32", "onnx-int8": "onnx-int8",
    }  # fmt: skip
    assert tags["onnx-int8"].get(SELECTED_TAG) == "true"
    assert SELECTED_TAG not in tags["onnx-fp32"]


def test_selected_variant_serves_like_the_original(store: SimpleNamespace, data_dir: Path, mlp_run: Outcome) -> None:
    assert mlp_run.outputs is not None
    rows = pd.read_csv(data_dir / "tab-test.csv").head(300)
    original = store.originals["mlp"].predict(None, rows)
    served = load_variant(store, mlp_run.outputs["model-uri"]).predict(rows)
    assert list(served.columns) == list(original.columns) == ["score"]
    assert len(served) == len(rows)
    # INT8: close, not equal.
    assert np.abs(served["score"].to_numpy() - original["score"].to_numpy()).max() < 0.05


# --- the CNN: static QDQ -----------------------------------------------------------------------------------


def test_cnn_int8_is_static_qdq_within_the_quality_budget(store: SimpleNamespace, cnn_run: Outcome) -> None:
    assert cnn_run.code == 0, cnn_run.text[-4000:]
    outputs = cnn_run.outputs
    assert outputs is not None and outputs["selected"] is True
    note = note_of(cnn_run, "onnx-int8")
    assert "static QDQ" in note and "2 Conv" in note, cnn_run.stderr[-3000:]
    ops = onnx_ops(store, outputs["report"]["onnx-int8"]["model_uri"])
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "QuantizeLinear" not in onnx_ops(store, outputs["report"]["onnx-fp32"]["model_uri"])
    drop = outputs["report"]["onnx-fp32"]["roc_auc"] - outputs["report"]["onnx-int8"]["roc_auc"]
    assert drop <= 0.01
    assert outputs["variant"] == "onnx-int8"


# --- scikit-learn pipelines --------------------------------------------------------------------------------


def test_sklearn_pipeline_converts_and_int8_is_declined(
    store: SimpleNamespace, data_dir: Path, sklearn_run: tuple[str, Outcome]
) -> None:
    kind, outcome = sklearn_run
    assert outcome.code == 0, outcome.text[-4000:]
    outputs = outcome.outputs
    assert outputs is not None and outputs["selected"] is True
    assert set(outputs["report"]) == {"onnx-fp32"}
    assert outputs["variant"] == "onnx-fp32"
    assert "onnx-int8: not built, nothing to quantize" in outcome.stderr
    rows = pd.read_csv(data_dir / "tab-test.csv").head(500)
    features = rows[[*compress_models.NUMERIC, compress_models.CATEGORICAL]]
    expected = store.pipelines[kind].predict_proba(features)
    served = np.asarray(load_variant(store, outputs["model-uri"]).predict(features))
    assert served.shape == expected.shape == (len(rows), 2)
    assert np.abs(served - expected).max() < 1e-4


# --- failures ----------------------------------------------------------------------------------------------


def test_a_budget_no_variant_meets_fails_the_gate_with_the_table(runs: dict[str, Future[Outcome]]) -> None:
    outcome = runs["tiny-budget"].result()
    assert_fails(outcome, GATE_FAILED, "no compressed variant qualifies", "outside the budgets: onnx-fp32, onnx-int8")
    assert "❌ no variant qualifies" in outcome.stderr
    assert outcome.stderr.count("size <= 1e-06 MB") >= 2  # the failed budget in both variants' rows
    assert outcome.outputs is not None
    assert outcome.outputs["selected"] is False and outcome.outputs["model-uri"] == ""
    assert set(outcome.outputs["report"]) == {"onnx-fp32", "onnx-int8"}


def test_a_variant_failing_a_behavioral_check_is_passed_over(runs: dict[str, Future[Outcome]]) -> None:
    """Dynamic INT8 quantizes the activations per batch, so a thousandth more on f0 moves some rows' scores by a
    whole quantization step; the FP32 export moves them by less than the tolerance. INT8 (smaller) is tried
    first, fails the invariance check, and FP32 is selected (the check is invariance_check)."""
    outcome = runs["invariance"].result()
    assert outcome.code == 0, outcome.text[-4000:]
    assert outcome.outputs is not None and outcome.outputs["variant"] == "onnx-fp32"
    tried = [line for line in outcome.stdout.splitlines() if line.startswith("mlgate compress: model tests of ")]
    assert [line.split()[5] for line in tried] == ["onnx-int8", "onnx-fp32"]
    assert "failed: behavioral.invariance" in outcome.stderr


@pytest.fixture(scope="module")
def strict_run(runs: dict[str, Future[Outcome]]) -> Outcome:
    """The MLP under a parity bound of 1e-9 and a minimum-functionality case it cannot meet: the FP32 export
    is outside its parity budget, so INT8 alone is offered, and it fails the model tests."""
    return runs["strict"].result()


def table_row(outcome: Outcome, variant: str) -> str:
    (row,) = [line for line in outcome.stderr.splitlines() if line.startswith(f"{variant} ")]
    return row


def test_the_fp32_export_is_rejected_by_its_parity_budget(strict_run: Outcome) -> None:
    """The export is float32 against the original's float32 torch kernels: close (about 1e-7), not bit-equal,
    so a parity bound of 1e-9 rejects it, and its INT8 copy with it; neither is put through the model tests."""
    assert_fails(
        strict_run, GATE_FAILED, "no compressed variant qualifies", "outside the budgets: onnx-fp32, onnx-int8"
    )
    fp32 = table_row(strict_run, "onnx-fp32")
    assert "❌ parity: max |diff| <= 1e-09, flips <= 0" in fp32 and "not run" in fp32, fp32
    assert "size <=" not in fp32 and "roc_auc drop" not in fp32  # parity alone
    int8 = table_row(strict_run, "onnx-int8")
    assert "❌ parity of the FP32 export it was quantized from" in int8 and "not run" in int8, int8
    assert "mlgate compress: model tests of" not in strict_run.stdout
    assert strict_run.outputs is not None and strict_run.outputs["selected"] is False


def test_no_variant_passing_the_model_tests_fails_the_gate_naming_the_check(runs: dict[str, Future[Outcome]]) -> None:
    risky = runs["risky"].result()
    assert_fails(risky, GATE_FAILED, "failed the model tests: onnx-int8: behavioral.minimum_functionality")
    tried = [line for line in risky.stdout.splitlines() if line.startswith("mlgate compress: model tests of ")]
    assert [line.split()[5] for line in tried] == ["onnx-int8", "onnx-fp32"]  # smallest first, then the next
    assert risky.outputs is not None and risky.outputs["model-uri"] == ""


def test_an_op_no_exporter_translates_is_named(runs: dict[str, Future[Outcome]]) -> None:
    outcome = runs["bessel"].result()
    assert_fails(outcome, INPUT_ERROR, "does not export to ONNX", "bessel_j0", "TorchScript exporter, failed too")
    assert outcome.outputs is None


def test_a_model_without_the_contract_is_named(runs: dict[str, Future[Outcome]]) -> None:
    outcome = runs["no-contract"].result()
    assert_fails(outcome, INPUT_ERROR, "NoContract", "mlgate_compress()")
    assert "mlgate_compress(self)" in outcome.hint()


def test_a_tiny_calibration_set_is_named_with_its_row_count(runs: dict[str, Future[Outcome]]) -> None:
    outcome = runs["tiny-calibration"].result()
    assert_fails(outcome, INPUT_ERROR, "at least 16 calibration rows", "'tiny' has 5")


def test_a_sklearn_step_without_converter_is_named(runs: dict[str, Future[Outcome]]) -> None:
    outcome = runs["custom"].result()
    assert_fails(outcome, INPUT_ERROR, "step 'encode.numeric.clip' (Clipper) has no skl2onnx converter")


def test_compress_without_model_tests_is_a_config_error(runs: dict[str, Future[Outcome]]) -> None:
    outcome = runs["no-model-tests"].result()
    assert_fails(outcome, CONFIG_ERROR, "compress needs model_tests")


def test_distill_without_a_student_is_a_config_error(runs: dict[str, Future[Outcome]]) -> None:
    outcome = runs["distill"].result()
    assert_fails(outcome, CONFIG_ERROR, "compress.methods lists distill", "compress.distill")
