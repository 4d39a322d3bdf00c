"""The example project's pull-request workflow under act: good data passes, each bad change fails."""

from __future__ import annotations

import hashlib

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.e2e.harness import ActResult, Workbench
from tests.e2e.mlflow_server import MlflowServer


def _assert_failed(result: ActResult, *needles: str) -> None:
    assert result.returncode != 0, f"the PR check passed but should have failed:\n{result.output[-4000:]}"
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in the act output:\n{result.output[-6000:]}"


def test_good_pull_request_passes_and_trains_with_lineage(workbench: Workbench, mlflow_server: MlflowServer) -> None:
    project = workbench.new_project("good")
    result = workbench.act(project)
    assert result.returncode == 0, result.output[-8000:]
    assert "mlgate lint" in result.output
    assert "Job succeeded" in result.output
    assert "FAILED" not in result.output
    docs = list(result.artifacts.glob("data-docs/**/index.html"))
    assert docs, f"no Data Docs artifact uploaded under {result.artifacts}"

    # The train job's run, read back from the real server: lineage tags, metrics and a loadable model.
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("fraud-detection")
    assert experiment is not None, "the train job created no MLflow experiment"
    head = project.git("rev-parse", "HEAD").stdout.strip()
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlgate.git.commit` = '{head}'")
    assert len(runs) == 1, f"expected one run for commit {head}, found {len(runs)}"
    run = runs[0]
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["mlgate.pr"] == "7"
    assert tags["mlgate.git.branch"] == "pr/good"
    assert tags["mlgate.profile"] == "quick"
    assert tags["mlgate.device"] == "cpu"
    assert tags["mlgate.torch"].startswith("2.")
    assert "/actions/runs/" in tags["mlgate.workflow_run_url"]
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in lock["stages"]["generate"]["outs"]}
    assert tags["mlgate.dvc.data/train.csv"] == outs["data/train.csv"]
    assert tags["mlgate.config_sha256"] == hashlib.sha256((project.path / "mlgate.yaml").read_bytes()).hexdigest()
    assert run.data.params["mlgate.profile"] == "quick"
    assert run.data.metrics["holdout_roc_auc"] > 0.75
    assert len(client.get_metric_history(run.info.run_id, "val_roc_auc")) >= 2
    models = client.search_logged_models(
        [experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert len(models) == 1
    mlflow.set_tracking_uri(mlflow_server.uri)
    model = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}")
    assert model.metadata.signature is not None
    rows = (
        pd.read_csv(project.path / "data" / "test.csv", nrows=200)
        if (project.path / "data" / "test.csv").exists()
        else None
    )
    if rows is None:
        project.dvc("pull", "data/test.csv")
        project.dvc("pull", "data/test.csv")  # act ran the jobs in copies; this checkout has no data
    rows = pd.read_csv(project.path / "data" / "test.csv", nrows=200)
    scores = np.asarray(model.predict(rows)).ravel()
    assert scores.shape == (200,) and ((scores >= 0) & (scores <= 1)).all()


def test_lint_finding_fails_with_annotation(workbench: Workbench) -> None:
    project = workbench.new_project("lint")
    (project.path / "src" / "fraud" / "sloppy.py").write_text("import os\n\n\ndef f(x: int) -> str:\n    return x\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "add sloppy module")
    result = workbench.act(project)
    _assert_failed(result, "F401", "src/fraud/sloppy.py", "return-value")


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["merchant_category"])


def _nulls_above_mostly(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[: len(frame) // 10], "device_type"] = None
    return frame


def _out_of_range(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[:50], "hour"] = 31
    return frame


def _unknown_category(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[:40], "country"] = "ZZ"
    return frame


def _drifted(frame: pd.DataFrame) -> pd.DataFrame:
    frame["amount"] = frame["amount"] * 4.0
    return frame


@pytest.mark.parametrize(
    ("name", "change", "needles"),
    [
        ("missing-column", _missing_column, ["merchant_category", "exists"]),
        ("nulls", _nulls_above_mostly, ["device_type", "not_null"]),
        ("out-of-range", _out_of_range, ["hour", "between"]),
        ("unknown-category", _unknown_category, ["country", "in_set", "ZZ"]),
        ("drift", _drifted, ["DRIFT", "amount"]),
    ],
)
def test_bad_data_fails_naming_the_check(workbench: Workbench, name: str, change, needles: list[str]) -> None:  # type: ignore[no-untyped-def]
    project = workbench.new_project(name)
    project.change_data("train", change, f"data: {name}")
    result = workbench.act(project)
    _assert_failed(result, *needles)
