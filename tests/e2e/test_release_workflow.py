"""The example project's release workflow (ml-release.yml) under act, against the real MLflow server.

Three pushes to main and one manual rollback, read back from the server: the first release becomes
`@champion` directly (no champion to run a canary against); a second release that does not beat it is
refused before any traffic moves (aliases unchanged, the reason recorded) and the workflow fails; a better
third one goes through the staged canary (nginx and both versions on the runner, locust load, the test
profile's seconds) and replaces it, the first becoming `@previous`; a dispatch with `rollback-to-version`
brings the first back. act does not enforce environment protection rules (no
reviewer is asked); the approvals the audit records come from the GitHub API stand-in, as GitHub's
`.../actions/runs/{id}/approvals` would answer after a reviewer approved.
"""

from __future__ import annotations

import json
import re

import yaml
from mlflow import MlflowClient
from mlgate.statefile import free_port

from tests.e2e.github_api import GitHubApiStandin
from tests.e2e.harness import ActResult, Project, Workbench, locust_errors
from tests.e2e.mlflow_server import MlflowServer

MODEL = "fraud-detection-e2e-release"
NO_GPU = {"MLGATE_REQUIRE_GPU": "false"}  # the runner mapped to `gpu` is this host: train on its CPU
# The canary on the runner itself: nginx and both versions on loopback, bounded locust load, seconds.
CANARY = {
    "MLGATE_CANARY_SERVE": "true",
    "MLGATE_CANARY_LOAD": "locust -f load/locustfile.py --headless -u 4 -r 4 --run-time 3m --only-summary "
    "--host $MLGATE_TRAFFIC_URL",
    "MLGATE_ROLLOUT_PROFILE": "test",
}


def _job(result: ActResult, job: str, outcome: str) -> bool:
    pattern = re.compile(rf"/{re.escape(job)}\s*\].*Job {outcome}")
    return any(pattern.search(line) for line in result.output.splitlines())


def _push(project: Project, profile: dict[str, object], message: str) -> None:
    """A commit on main that changes the release profile (a model trained on more or less, longer or shorter)."""
    path = project.path / "mlgate.yaml"
    config = yaml.safe_load(path.read_text())
    config["train"]["profiles"]["full"] = profile
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    project.git("commit", "-q", "-am", message)


def _aliases(client: MlflowClient) -> dict[str, str]:
    return {str(alias): str(version) for alias, version in client.get_registered_model(MODEL).aliases.items()}


def test_two_releases_a_refused_one_and_a_rollback(
    workbench: Workbench, mlflow_server: MlflowServer, github_api: GitHubApiStandin
) -> None:
    project = workbench.new_project("release")
    project.git("checkout", "-q", "main")
    path = project.path / "mlgate.yaml"
    config = yaml.safe_load(path.read_text())
    config["model_tests"]["baseline"]["model"] = MODEL  # its own registered model on the shared server
    config["registry"] = {"promotion": {"guards": {"pr_auc": 0.05}}}
    config["compress"]["methods"] = ["onnx", "int8"]  # compression is tested in depth by the PR workflow
    # Two steps, so the canary gets its samples within the test profile's seconds; nginx on a free port.
    config["rollout"] = {"steps": [25, 100], "thresholds": {"min_samples": 40, "max_latency_ratio": 4.0}}
    config["traffic"] = {"nginx": {"listen_port": free_port()}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    project.git("commit", "-q", "-am", "release: own registered model")
    github_api.approve("production", "release-manager", "looks good")
    client = MlflowClient(mlflow_server.uri)

    # 1. The first release (the PR's quick profile: 20,000 rows, 3 epochs) becomes the first champion.
    _push(project, {"max_rows": 20000, "epochs": 3, "lr": 0.003}, "train: a quick release")
    first = workbench.act(project, workflow="release.yml", event="push", github_api=github_api, variables=NO_GPU)
    assert first.returncode == 0, first.output[-8000:]
    for job in ("train", "test-model", "compress", "register", "staging", "production"):
        assert _job(first, job, "succeeded"), f"{job} did not succeed"
    assert not _job(first, "rollback", "succeeded")  # skipped: this is a release
    assert _aliases(client) == {"challenger": "1", "champion": "1"}
    version = client.get_model_version(MODEL, "1")
    assert version.tags["mlgate.compress.variant"].startswith("onnx-")  # the compressed variant is registered
    assert version.tags["mlgate.model_tests.passed"] == "true"
    assert version.tags["mlgate.git.commit"] == project.git("rev-parse", "HEAD").stdout.strip()
    assert version.tags["mlgate.audit.promote.approvers"] == "release-manager"
    # No champion yet: the model tests judge the first model on their thresholds alone, and say so.
    assert "no baseline yet" in first.output and "does not exist" in first.output

    # 2. The same model again: it does not beat the champion by the margin. Refused, nothing moves. From here
    # on without compression (the compress job then registers the trained model as it is), to keep it short.
    config = yaml.safe_load(path.read_text())
    del config["compress"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    project.git("commit", "-q", "-am", "release the model uncompressed")
    same = workbench.act(project, workflow="release.yml", event="push", github_api=github_api, variables=NO_GPU)
    assert same.returncode != 0, same.output[-6000:]
    assert _job(same, "register", "succeeded") and not _job(same, "production", "succeeded")
    # The compress job on a project that declares no compression: a notice, not a failure.
    assert _job(same, "compress", "succeeded") and "declares no compress section: nothing to compress" in same.output
    assert "not promoted" in same.output and "does not beat the champion" in same.output
    assert _aliases(client) == {"challenger": "2", "champion": "1"}
    assert client.get_model_version(MODEL, "2").tags["mlgate.audit.promote.decision"] == "rejected"

    # 3. Every row, three epochs: better on the same rows (ROC AUC about 0.800 against 0.793, and the
    # project's own test of the recall on large frauds holds); it becomes champion, the first @previous.
    _push(project, {"epochs": 3, "lr": 0.003}, "train: all rows")
    better = workbench.act(
        project, workflow="release.yml", event="push", github_api=github_api, variables={**NO_GPU, **CANARY}
    )
    assert better.returncode == 0, better.output[-8000:]
    assert _aliases(client) == {"challenger": "3", "champion": "3", "previous": "1"}
    assert "mlgate rollout: step 25%: stable 75% / canary 25%" in better.output
    assert "mlgate rollout: promoted version 3" in better.output
    assert "load started" in better.output and "traffic down" in better.output
    assert locust_errors(better.output) == {}  # no client request failed at any weight change
    assert client.get_model_version(MODEL, "3").tags["mlgate.audit.rollout.decision"] == "promoted"
    assert "mlgate.compress.variant" not in client.get_model_version(MODEL, "3").tags  # the trained model itself

    # 4. Production goes back by hand, behind the same environment; the reason is recorded.
    rollback = workbench.act(
        project, workflow="release.yml", event="workflow_dispatch", github_api=github_api,
        inputs={"rollback-to-version": "1", "reason": "p95 latency doubled after v3"},
    )  # fmt: skip
    assert rollback.returncode == 0, rollback.output[-8000:]
    assert _job(rollback, "rollback", "succeeded") and not _job(rollback, "train", "succeeded")
    assert _aliases(client) == {"challenger": "3", "champion": "1"}

    # The audit trail, read back from the server: every operation, in order, with who, why and the evidence.
    experiment = client.get_experiment_by_name("mlgate-audit")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlgate.audit.model` = '{MODEL}'",
        order_by=["attributes.start_time ASC"],
    )  # fmt: skip
    trail = [(r.data.tags["mlgate.audit.operation"], r.data.tags["mlgate.audit.version"],
              r.data.tags["mlgate.audit.decision"]) for r in runs]  # fmt: skip
    assert trail == [
        ("register", "1", "registered"), ("promote", "1", "promoted"),
        ("register", "2", "registered"), ("promote", "2", "rejected"),
        ("register", "3", "registered"), ("promote", "3", "promoted"), ("rollout", "3", "promoted"),
        ("rollback", "1", "rolled-back"),
    ], trail  # fmt: skip
    promoted = runs[5].data.tags
    assert promoted["mlgate.audit.approvers"] == "release-manager"
    assert promoted["mlgate.audit.environment"] == "production"
    assert "/actions/runs/" in promoted["mlgate.audit.run_url"]
    compared = json.loads(promoted["mlgate.audit.evidence"])
    assert compared["metric"] == "roc_auc" and compared["candidate"]["roc_auc"] > compared["champion"]["roc_auc"]
    assert "p95 latency doubled after v3" in runs[7].data.tags["mlgate.audit.reason"]
    assert "does not beat the champion" in runs[3].data.tags["mlgate.audit.reason"]
