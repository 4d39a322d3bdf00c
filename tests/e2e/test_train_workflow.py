"""The example project's training on main under act, GPU labels mapped to this host, against the real
MLflow server: no GPU here, so a release (release.yml, on push) must stop at its train job at once
(require-gpu), and training by hand (train.yml) with the CPU fallback trains the full profile twice and
passes the reproducibility check."""

from __future__ import annotations

from mlflow import MlflowClient

from tests.e2e.harness import Workbench
from tests.e2e.mlflow_server import MlflowServer


def test_push_to_main_on_a_runner_without_gpu_fails_fast(workbench: Workbench, mlflow_server: MlflowServer) -> None:
    project = workbench.new_project("train-nogpu")
    project.git("checkout", "-q", "main")
    head = project.git("rev-parse", "HEAD").stdout.strip()
    # The release workflow's first job: a push to main trains on the GPU runner, and this one has none.
    result = workbench.act(project, workflow="release.yml", event="push")
    assert result.returncode != 0, result.output[-6000:]
    assert "no CUDA GPU visible to the training (require-gpu is true)" in result.output
    assert "/dev/nvidia" in result.output  # the hint says what to check on the runner
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("fraud-detection")
    if experiment is not None:  # another test may have created it; this push must have left no run
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlgate.git.commit` = '{head}'")
        assert runs == []


def test_dispatch_with_cpu_fallback_trains_full_profile_reproducibly(
    workbench: Workbench, mlflow_server: MlflowServer
) -> None:
    project = workbench.new_project("train-repro")
    project.git("checkout", "-q", "main")
    head = project.git("rev-parse", "HEAD").stdout.strip()
    result = workbench.act(
        project, workflow="train.yml", event="workflow_dispatch", inputs={"require-gpu": "false", "repro-check": "true"}
    )
    assert result.returncode == 0, result.output[-8000:]
    assert "fell back to the CPU" in result.output
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("fraud-detection")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlgate.git.commit` = '{head}'")
    assert len(runs) == 2, [r.info.run_id for r in runs]
    first = next(r for r in runs if "mlgate.repro_of" not in r.data.tags)
    second = next(r for r in runs if "mlgate.repro_of" in r.data.tags)
    assert second.data.tags["mlgate.repro_of"] == first.info.run_id
    assert first.data.tags["mlgate.profile"] == "full"
    assert first.data.tags["mlgate.git.branch"] == "main"
    for name in ("holdout_roc_auc", "holdout_pr_auc", "holdout_f1"):
        assert abs(first.data.metrics[name] - second.data.metrics[name]) <= 1e-6
