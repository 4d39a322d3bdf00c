"""The example project's training on two CPU processes with Gloo, through `mlgate train` and torchrun, against
the session's real MLflow server: rank 0 alone logs (each epoch's metrics once, one model), the lineage has
world size 2 and both ranks' devices, and the repro check (two launches, same world size and seed) passes."""

from __future__ import annotations

import json
import re
import subprocess

from mlflow import MlflowClient

from tests.e2e.harness import BIN, Workbench
from tests.e2e.mlflow_server import MlflowServer


def test_the_example_trains_on_two_gloo_processes_reproducibly(
    workbench: Workbench, mlflow_server: MlflowServer
) -> None:
    project = workbench.new_project("distributed")
    outputs = project.path.parent / f"{project.path.name}-outputs"
    env = dict(project.env, MLGATE_VENV_ROOT=str(workbench.venv_root), MLFLOW_TRACKING_URI=mlflow_server.uri)
    env.update(GITHUB_OUTPUT=str(outputs))
    env.pop("GITHUB_STEP_SUMMARY", None)
    done = subprocess.run(
        [str(BIN / "mlgate"), "train", "--profile", "quick", "--distributed", "2", "--repro-check", "--no-dvc-pull"],
        cwd=project.path, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    # Both ranks ran, each with its own seed (declared seed + rank), and only rank 0 printed the epochs.
    assert re.search(r"\[default0\]:fraud\.train: profile quick, seed 20240601, device cpu, rank 0 of 2", done.stdout)
    assert re.search(r"\[default1\]:fraud\.train: profile quick, seed 20240602, device cpu, rank 1 of 2", done.stdout)
    assert not re.search(r"\[default1\]:epoch", done.stdout)

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("fraud-detection")
    assert experiment is not None
    head = project.git("rev-parse", "HEAD").stdout.strip()
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlgate.git.commit` = '{head}'", order_by=["start_time ASC"]
    )
    assert len(runs) == 2, "the repro check's two launches, and no run opened by another rank"
    for run in runs:
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["mlgate.distributed.world_size"] == "2"
        assert (tags["mlgate.distributed.backend"], tags["mlgate.distributed.nproc_per_node"]) == ("gloo", "2")
        devices = [line for lines in json.loads(tags["mlgate.distributed.devices"]).values() for line in lines]
        assert sorted(devices) == ["rank 0: cpu cpu", "rank 1: cpu cpu"]
        history = client.get_metric_history(run.info.run_id, "val_roc_auc")
        assert sorted(m.step for m in history) == [1, 2, 3], "each epoch logged once, by rank 0"
        models = client.search_logged_models(
            [experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        assert len(models) == 1
        assert run.data.metrics["holdout_roc_auc"] > 0.75
    first, second = (run.data.metrics for run in runs)
    assert abs(first["holdout_roc_auc"] - second["holdout_roc_auc"]) <= 1e-6
    assert "reproducible<<" in outputs.read_text() and "world-size<<" in outputs.read_text()
