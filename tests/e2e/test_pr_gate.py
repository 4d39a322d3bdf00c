"""The example project's pull-request workflow under act: good data passes, each bad change fails."""

from __future__ import annotations

import hashlib

import mlflow
import numpy as np
import pandas as pd
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
    # Compression has its own e2e tests (test_model_gate, test_sklearn_project); this run is about lineage.
    config = yaml.safe_load((project.path / "mlgate.yaml").read_text())
    del config["compress"]
    (project.path / "mlgate.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    project.git("commit", "-q", "-am", "no compression")
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


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["merchant_category"])


def _bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Three bad changes to distinct rows of one file: each expectation must fail on its own."""
    frame.loc[frame.index[: len(frame) // 10], "device_type"] = None  # above the tolerated 1% of nulls
    frame.loc[frame.index[-50:], "hour"] = 31
    frame.loc[frame.index[-100:-60], "country"] = "ZZ"
    return frame


def test_lint_finding_and_bad_data_fail_each_naming_the_check(workbench: Workbench) -> None:
    """One PR with a lint finding and four kinds of bad data: every gate that must fail names its check.

    One act run instead of one per case (lint and validate-data are independent jobs, each expectation
    a check of its own), which keeps the suite inside its time budget.
    """
    project = workbench.new_project("bad-changes")
    (project.path / "src" / "fraud" / "sloppy.py").write_text("import os\n\n\ndef f(x: int) -> str:\n    return x\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "add sloppy module")
    project.change_data("test", _missing_column, "data: test without merchant_category")
    project.change_data("train", _bad_rows, "data: nulls, out-of-range hours, unknown country")
    result = workbench.act(project)
    _assert_failed(
        result,
        # lint: ruff's unused import and mypy's wrong return type, at their file
        "F401", "src/fraud/sloppy.py", "return-value",
        # validate-data: each failed expectation names its column and kind
        "merchant_category", "exists",
        "device_type", "not_null",
        "hour", "between",
        "country", "in_set", "ZZ",
    )  # fmt: skip


def _drifted(frame: pd.DataFrame) -> pd.DataFrame:
    frame["amount"] = frame["amount"] * 4.0
    return frame


def test_drifted_data_fails_naming_the_feature(workbench: Workbench) -> None:
    project = workbench.new_project("drift")
    project.change_data("train", _drifted, "data: amounts from the new card scheme")
    result = workbench.act(project)
    _assert_failed(result, "DRIFT", "amount")
