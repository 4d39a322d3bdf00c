"""The release workflow's canary (ml-release.yml's production job, actions/canary) under act with bad challengers.

A dispatch with `rollout-version` runs only the production job: the named, already registered version goes
through the staged canary against @champion, on nginx and both versions on the runner, under bounded locust
load. Three bad challengers, each a real pyfunc logged to MLflow (tests/unit/rollout_models.py: one errors on
about 30 % of requests, one is slow, one's scores are shifted and it never errors), are each rolled back at the
first step for their own reason, the registry untouched; a good one's controller is killed mid-step and the
action's always-run `abort --stale-only` step recovers it: traffic back on stable, the rollout closed as
aborted in the audit trail, and the stack and the load it started stopped. The clients (locust) see no failed
request but the erroring model's own 500s. The good challenger promoted through every step is the release
test's third release (test_release_workflow.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import psutil
import yaml
from mlflow import MlflowClient
from mlgate.registry import Registry
from mlgate.registry.audit import Who
from mlgate.statefile import alive, free_port, read_state

from tests.e2e.github_api import GitHubApiStandin
from tests.e2e.harness import ActResult, Project, Workbench, locust_errors
from tests.e2e.mlflow_server import MlflowServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import rollout_models

MODEL = "fraud-detection-e2e-canary"
WHO = Who("alice", ["bob"], "", "c0ffee", "example/fraud-detection", "production")
CANARY = {
    "MLGATE_CANARY_SERVE": "true",
    "MLGATE_CANARY_LOAD": "locust -f load/locustfile.py --headless -u 4 -r 4 --run-time 3m --only-summary "
    "--host $MLGATE_TRAFFIC_URL",
    "MLGATE_ROLLOUT_PROFILE": "test",
}
BOUND_S = 600  # bounds for a stuck run, not timing assertions
# Requests as the example's load/locustfile.py sends them; the challengers read `amount` (hundredths of 30 and
# above: the erroring one answers these, its warm-up on the input example passes).
ROWS = pd.DataFrame(
    {
        "amount": [33.42, 480.75], "hour": [3, 14], "velocity_1h": [0, 2], "transaction_count_7d": [5, 12],
        "avg_amount_30d": [40.2, 35.0], "account_age_days": [100, 2000], "country": ["US", "GB"],
        "device_type": ["mobile", "desktop"], "merchant_category": ["grocery", "travel"],
    }
)  # fmt: skip


def _register(server: MlflowServer, project: Project) -> dict[str, str]:
    """v1 good (@champion), then erroring, slow, shifted and good, each with passing model-test evidence (what
    offline tests saw): the canary is what catches what they missed."""
    client = MlflowClient(server.uri, server.uri)
    registry = Registry(client, server.uri, MODEL, "mlgate-audit")
    loaded = _loaded(project)
    mlflow.set_tracking_uri(server.uri)  # the conftest restores the global after this module
    mlflow.set_experiment("canary-challengers")
    return rollout_models.register_challengers(registry, loaded, WHO, ROWS, ("erroring", "slow", "shifted", "good"))


def _loaded(project: Project) -> Any:
    from mlgate.config import load_config

    return load_config(project.path / "mlgate.yaml")


def _aliases(server: MlflowServer) -> dict[str, str]:
    model = MlflowClient(server.uri).get_registered_model(MODEL)
    return {str(alias): str(version) for alias, version in model.aliases.items()}


def _job(result: ActResult, job: str, outcome: str) -> bool:
    pattern = re.compile(rf"/{re.escape(job)}\s*\].*Job {outcome}")
    return any(pattern.search(line) for line in result.output.splitlines())


def _dispatch(workbench: Workbench, project: Project, github_api: GitHubApiStandin, version: str) -> ActResult:
    return workbench.act(
        project, workflow="release.yml", event="workflow_dispatch", github_api=github_api,
        inputs={"rollout-version": version}, variables=CANARY,
    )  # fmt: skip


def _controller(version: str) -> psutil.Process | None:
    """The `mlgate rollout` the canary action started for `version` (act runs it on this host)."""
    for process in psutil.process_iter(["cmdline"]):
        try:
            line = process.info["cmdline"] or []
            if any(word.endswith("/mlgate") for word in line) and line[-1:] == ["rollout"]:
                env = process.environ()
                if env.get("MLGATE_INPUT_OPERATION") == "start" and env.get("MLGATE_INPUT_VERSION") == version:
                    return process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_bad_challengers_roll_back_and_a_killed_controller_is_recovered(
    workbench: Workbench, mlflow_server: MlflowServer, github_api: GitHubApiStandin
) -> None:
    project = workbench.new_project("canary")
    project.git("checkout", "-q", "main")
    path = project.path / "mlgate.yaml"
    config = yaml.safe_load(path.read_text())
    config["model_tests"]["baseline"]["model"] = MODEL  # its own registered model on the shared server
    config["registry"] = {"promotion": {"metric": "roc_auc", "margin": 0.0}}
    # As tests/unit/test_rollout.py: three steps, enough samples within the test profile's seconds, and latency
    # compared loosely (two servers beside the load and the suite on this machine); the slow one is 10x and more.
    config["rollout"] = {"steps": [20, 50, 100], "thresholds": {"min_samples": 40, "max_latency_ratio": 4.0}}
    config["traffic"] = {"nginx": {"listen_port": free_port()}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    project.git("commit", "-q", "-am", "canary: own registered model")
    github_api.approve("production", "release-manager", "roll it out")
    versions = _register(mlflow_server, project)
    before = _aliases(mlflow_server)
    assert before == {"champion": versions["champion"], "challenger": versions["good"]}
    client = MlflowClient(mlflow_server.uri)

    # Three bad challengers: each rolled back at the first step (20 %), for its own reason.
    for kind, reason in (
        ("erroring", r"error_rate|error rate"),
        ("slow", r"latency"),
        ("shifted", r"score"),
    ):
        version = versions[kind]
        result = _dispatch(workbench, project, github_api, version)
        assert result.returncode != 0, result.output[-6000:]
        assert "step 50%" not in result.output  # never went past the first step
        assert "mlgate rollout: traffic down" in result.output and "load started" in result.output
        assert _aliases(mlflow_server) == before, kind  # the registry untouched
        tags = client.get_model_version(MODEL, version).tags
        assert tags["mlgate.audit.rollout.decision"] == "rolled-back", kind
        records = list(result.artifacts.glob("rollout-record/**/decision-*.json"))
        assert len(records) == 1, f"{kind}: {records}"
        record = json.loads(records[0].read_text())
        assert record["outcome"] == "rolled-back" and len(record["steps"]) == 1, record["reason"]
        assert record["reason"].startswith("step 20%: ") and re.search(reason, record["reason"]), (kind, record)
        assert "decision=rolled-back" in result.output and f"rollout of version {version} rolled-back" in result.output
        errors = locust_errors(result.output)
        switch = {error: n for error, n in errors.items() if "code=500" not in error}
        assert switch == {}, f"{kind}: requests failed by the switch: {switch}"
        if kind == "erroring":
            assert errors, "the erroring model's 500s never reached a client"
        else:
            assert errors == {}, f"{kind}: {errors}"
        assert _job(result, "production", "failed") and not _job(result, "train", "succeeded")

    # A good challenger whose controller is killed mid-step (the runner lost it): the action's last step recovers.
    version = versions["good"]
    outcome: dict[str, ActResult] = {}
    run = threading.Thread(target=lambda: outcome.update(run=_dispatch(workbench, project, github_api, version)))
    run.start()
    controller: psutil.Process | None = None
    folder = Path()
    state: dict[str, Any] = {}
    stack_pids: list[int] = []
    deadline = time.monotonic() + BOUND_S
    try:
        while run.is_alive() and time.monotonic() < deadline:
            controller = controller or _controller(version)
            if controller is not None:
                folder = Path(controller.cwd())
                state = read_state(folder / ".mlgate" / "rollout" / "state.json") or {}
                step = state.get("step") or {}
                looked = (state.get("steps") or [{}])[-1].get("analyses")
                if state.get("phase") == "running" and step.get("canary") == 20 and looked:
                    traffic = read_state(folder / ".mlgate" / "traffic" / "state.json") or {}
                    stack_pids = [int(traffic["nginx"]["pid"])]
                    stack_pids += [int(upstream["pid"]) for upstream in traffic["upstreams"].values()]
                    os.kill(controller.pid, signal.SIGKILL)  # no clean-up of its own
                    break
            time.sleep(0.2)
    finally:
        run.join(timeout=BOUND_S)
    assert not run.is_alive(), "the act run did not end"
    result = outcome["run"]
    assert stack_pids, "the controller was never seen mid-step: " + result.output[-6000:]
    assert result.returncode != 0, result.output[-6000:]
    assert f"mlgate rollout abort: aborted rollout {state['id']}" in result.output, result.output[-6000:]
    closed = read_state(folder / ".mlgate" / "rollout" / "state.json") or {}
    assert closed["phase"] == "aborted" and "recovered from the state file" in closed["reason"], closed
    assert "stopped the load generator the rollout started" in result.output
    assert "took down the stack the rollout started" in result.output
    assert not [pid for pid in stack_pids if alive(pid)], "the stack outlived the abort"
    assert _aliases(mlflow_server) == before  # @champion, @challenger as they were
    assert client.get_model_version(MODEL, version).tags["mlgate.audit.rollout.decision"] == "aborted"
    assert locust_errors(result.output) == {}

    # A dispatch that asks for both a rollback and a rollout is refused at once, naming both inputs.
    both = workbench.act(
        project, workflow="release.yml", event="workflow_dispatch", github_api=github_api,
        inputs={"rollout-version": versions["good"], "rollback-to-version": versions["champion"], "reason": "x"},
    )  # fmt: skip
    assert both.returncode != 0
    assert "rollback-to-version and rollout-version were both given" in both.output, both.output[-4000:]
    assert not _job(both, "production", "succeeded") and not _job(both, "train", "succeeded")
    assert _aliases(mlflow_server) == before
