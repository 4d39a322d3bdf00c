"""Training: a tiny run logged to MLflow as `mlgate train` runs it, the logged model, determinism.

`mlgate train` creates the MLflow run (with the profile's params), exports MLFLOW_TRACKING_URI,
MLFLOW_RUN_ID and MLGATE_* and runs `python -m fraud.train`; `run_training` does the same against
a SQLite tracking store in a temporary folder.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

_TRAIN_EXTRA = "needs the train extra: pip install -e '.[train]' -c constraints.txt"
pytest.importorskip("torch", reason=_TRAIN_EXTRA)
pytest.importorskip("mlflow", reason=_TRAIN_EXTRA)
mlgate_runtime = pytest.importorskip("mlgate_runtime", reason="provided by `mlgate train` (see conftest.py)")

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from fraud.features import FEATURES, LABEL  # noqa: E402
from fraud.generate import main as generate  # noqa: E402
from fraud.model import OUTPUT_COLUMN, Preprocessor  # noqa: E402
from fraud.train import TrainError, TrainParams  # noqa: E402
from fraud.train import main as train_main  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
TINY_PARAMS: dict[str, Any] = {"max_rows": 3000, "epochs": 2, "lr": 0.01}
SEED = 7
HOLDOUT_METRICS = (
    "holdout_roc_auc",
    "holdout_pr_auc",
    "holdout_f1",
    "holdout_precision",
    "holdout_recall",
    "holdout_accuracy",
)
EPOCH_METRICS = ("train_loss", "val_loss", "val_roc_auc")


@dataclass(frozen=True)
class Tracking:
    uri: str
    experiment_id: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)


@dataclass(frozen=True)
class TrainedRun:
    run_id: str
    model_id: str
    stdout: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/ when it is there (dvc pull), else the same bytes generated into a temporary folder."""
    data = PROJECT / "data"
    if (data / "train.csv").is_file() and (data / "test.csv").is_file():
        return data
    out = tmp_path_factory.mktemp("data")
    assert generate(["--params", str(PROJECT / "params.yaml"), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracking]:
    """A SQLite tracking store whose experiment keeps its artifacts in the same temporary folder."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/ URIs resolve against it in this process
        experiment_id = MlflowClient(uri).create_experiment(
            "fraud-tests", artifact_location=(root / "artifacts").as_uri()
        )
        yield Tracking(uri, experiment_id)


def run_training(tracking: Tracking, data_dir: Path, params: dict[str, Any], seed: int = SEED) -> TrainedRun:
    """Create the run and its params as mlgate does, then run `python -m fraud.train` in it."""
    client = tracking.client
    run_id = client.create_run(tracking.experiment_id, tags={"mlgate.profile": "test"}).info.run_id
    for key, value in params.items():  # what mlgate logs: text as is, anything else as JSON
        client.log_param(run_id, key, value if isinstance(value, str) else json.dumps(value))
    python_path = [str(PROJECT / "src"), str(Path(mlgate_runtime.__file__).parent)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*python_path, os.environ.get("PYTHONPATH", "")]),
        "MLFLOW_TRACKING_URI": tracking.uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": tracking.experiment_id,
        "MLGATE_PROFILE": "test",
        "MLGATE_PARAMS": json.dumps(params),
        "MLGATE_SEED": str(seed),
        "MLGATE_DEVICE": "cpu",
        "MLGATE_DETERMINISTIC": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "fraud.train", "--data-dir", str(data_dir)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"training failed:\n{done.stdout}\n{done.stderr}"
    models = client.search_logged_models(
        experiment_ids=[tracking.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    assert len(models) == 1, models
    return TrainedRun(run_id, models[0].model_id, done.stdout)


@pytest.fixture(scope="module")
def trained(tracking: Tracking, data_dir: Path) -> TrainedRun:
    return run_training(tracking, data_dir, TINY_PARAMS)


@pytest.fixture(scope="module")
def loaded(trained: TrainedRun) -> mlflow.pyfunc.PyFuncModel:
    return mlflow.pyfunc.load_model(trained.model_uri)


@pytest.fixture(scope="module")
def test_rows(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / "test.csv")


def _final_metrics(tracking: Tracking, run_id: str) -> dict[str, float]:
    return dict(tracking.client.get_run(run_id).data.metrics)


def test_run_logs_holdout_and_per_epoch_metrics(tracking: Tracking, trained: TrainedRun) -> None:
    run = tracking.client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in HOLDOUT_METRICS:
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["holdout_roc_auc"] > 0.6  # 2,400 rows, 2 epochs; the full run reaches ~0.80
    assert 0.0 < metrics["decision_threshold"] < 1.0
    assert metrics["train_seconds"] > 0 and metrics["train_samples_per_second"] > 0
    for name in EPOCH_METRICS:
        history = tracking.client.get_metric_history(trained.run_id, name)
        assert sorted(point.step for point in history) == [1, 2], name
    assert run.data.params["max_rows"] == "3000" and run.data.params["hidden"] == "[32, 16]"
    assert "epoch 2/2" in trained.stdout and "holdout:" in trained.stdout
    assert not any(key.startswith("mlgate.") for key in run.data.tags if key != "mlgate.profile")


def test_logged_model_predicts_probabilities(
    tracking: Tracking, trained: TrainedRun, loaded: mlflow.pyfunc.PyFuncModel, test_rows: pd.DataFrame
) -> None:
    assert test_rows["device_type"].isna().any()  # the 0.2% of missing device types go through
    predicted = loaded.predict(test_rows)  # extra columns (ids, label) are ignored
    assert isinstance(predicted, pd.DataFrame)
    assert list(predicted.columns) == [OUTPUT_COLUMN] and len(predicted) == len(test_rows)
    probability = predicted[OUTPUT_COLUMN].to_numpy()
    assert probability.dtype == np.float64
    assert np.isfinite(probability).all() and (probability >= 0).all() and (probability <= 1).all()
    # The positive-class weight is undone: the mean probability is near the positive rate (1.9%).
    assert 0.005 < probability.mean() < 0.06

    threshold = _final_metrics(tracking, trained.run_id)["decision_threshold"]
    assert loaded.metadata.metadata["decision_threshold"] == pytest.approx(threshold)
    model_tags = tracking.client.get_logged_model(trained.model_id).tags
    assert float(model_tags["decision_threshold"]) == pytest.approx(threshold, abs=1e-6)


def test_missing_feature_column_is_a_clear_error(
    loaded: mlflow.pyfunc.PyFuncModel, test_rows: pd.DataFrame
) -> None:
    without_amount = test_rows.drop(columns=["amount"]).head(5)
    with pytest.raises(MlflowException, match=r"missing inputs \['amount'\]"):
        loaded.predict(without_amount)  # the signature catches it first
    with pytest.raises(ValueError, match=r"missing feature column\(s\) \['amount'\]"):
        loaded.unwrap_python_model().predict(None, without_amount)


def test_same_seed_gives_identical_metrics(tracking: Tracking, trained: TrainedRun, data_dir: Path) -> None:
    again = run_training(tracking, data_dir, TINY_PARAMS)
    first, second = _final_metrics(tracking, trained.run_id), _final_metrics(tracking, again.run_id)
    compared = (*HOLDOUT_METRICS, "decision_threshold", *EPOCH_METRICS)
    assert {name: first[name] for name in compared} == {name: second[name] for name in compared}


def test_missing_data_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--data-dir", str(tmp_path)]) == 2
    assert "train.csv: no such file" in capsys.readouterr().err


def test_missing_label_exits_nonzero(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pd.read_csv(data_dir / "train.csv", nrows=300).drop(columns=[LABEL]).to_csv(
        tmp_path / "train.csv", index=False
    )
    pd.read_csv(data_dir / "test.csv", nrows=300).to_csv(tmp_path / "test.csv", index=False)
    assert train_main(["--data-dir", str(tmp_path)]) == 2
    assert "no label column 'is_fraud'" in capsys.readouterr().err


def test_unknown_or_invalid_params_are_rejected() -> None:
    with pytest.raises(TrainError, match="unknown training parameter"):
        TrainParams.from_mapping({"epoch": 3})
    with pytest.raises(TrainError, match="epochs >= 1"):
        TrainParams.from_mapping({"epochs": 0})
    assert TrainParams.from_mapping({"hidden": [8], "max_rows": 500}).hidden == (8,)


def test_preprocessor_fills_nulls_and_zeroes_unknown_categories(data_dir: Path) -> None:
    frame = pd.read_csv(data_dir / "train.csv", nrows=1000)
    preprocessor = Preprocessor.fit(frame)
    rows = frame.head(3).copy()
    rows["device_type"] = [None, "smartwatch", "mobile"]
    rows["amount"] = [np.nan, 10.0, 20.0]
    matrix = preprocessor.transform(rows)
    names = preprocessor.output_names
    assert matrix.shape == (3, preprocessor.n_outputs) and matrix.dtype == np.float32
    device = [i for i, name in enumerate(names) if name.startswith("device_type=")]
    assert matrix[0, device].sum() == 0 and matrix[1, device].sum() == 0
    assert matrix[2, names.index("device_type=mobile")] == 1
    amount = names.index("amount")
    expected = (preprocessor.medians["amount"] - preprocessor.means["amount"]) / preprocessor.stds["amount"]
    assert matrix[0, amount] == pytest.approx(expected, rel=1e-5)
    assert len(pickle.dumps(preprocessor)) < 2_000
    assert set(FEATURES) == set(preprocessor.numeric) | set(preprocessor.categories)
