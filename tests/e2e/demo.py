"""`make demo`: the example project's workflows under act, on this checkout.

Two pull requests: one with good data, which passes (lint, data, training, model tests, compression),
and one whose training data drifted, which the data gate stops with the drifted features named. Then
the good one is merged and its push to main runs the release workflow: train, test, compress,
register, staging, and the production job, whose approval comes from a loopback stand-in of GitHub's
API (act does not pause for reviewers), promotes the release to @champion. Each run is what `mlgate ci`
does (the e2e harness calls the same `run_local_ci`), against one MLflow server for all, so the models
and the audit trail can be read back. Uses only loopback and temp folders.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlgate.localci import MlflowServer

from tests.e2e.github_api import GitHubApiStandin
from tests.e2e.harness import ActResult, Workbench

KEEP = re.compile(r"(::error|::warning|FAILED|DRIFT|Job succeeded|Job failed|mlgate \S+ ready|✅ |❌ )")


def show(title: str, result: ActResult) -> None:
    print(f"\n=== {title}: act exit {result.returncode} in {result.seconds:.0f}s ===")
    for line in result.output.splitlines():
        if KEEP.search(line):
            print("  " + line.strip()[:220])


def drift(frame: pd.DataFrame) -> pd.DataFrame:
    frame["amount"] = frame["amount"] * 4.0
    return frame


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mlgate-demo-") as tmp:
        server = MlflowServer(Path(tmp) / "mlflow").start()
        print(f"MLflow tracking server on {server.uri} (sqlite, this demo only)")
        try:
            return run_demo(Path(tmp), server.uri)
        finally:
            server.stop()


def run_demo(tmp: Path, tracking_uri: str) -> int:
    bench = Workbench(tmp, tracking_uri=tracking_uri)
    good = bench.new_project("good-data")
    good_result = bench.act(good)
    show("PR with good data (expected: pass, and a trained model in MLflow)", good_result)
    show_training(tracking_uri)
    drifted = bench.new_project("drifted-data")
    drifted.change_data("train", drift, "data: amounts from the new card scheme")
    drifted_result = bench.act(drifted)
    show("PR with drifted training data (expected: fail on drift, no training)", drifted_result)
    good.git("checkout", "-q", "main")
    good.git("merge", "-q", "--no-ff", "pr/good-data", "-m", "Merge pull request #7: good data")
    with GitHubApiStandin() as github_api:
        github_api.approve("production", "release-manager", "metrics and model tests look good")
        release = bench.act(good, workflow="release.yml", event="push", github_api=github_api,
                            variables={"MLGATE_REQUIRE_GPU": "false"})  # fmt: skip
    show("Push to main: the release (expected: registered, approved, promoted to @champion)", release)
    show_registry(tracking_uri)
    ok = good_result.returncode == 0 and drifted_result.returncode != 0 and release.returncode == 0
    verdict = "OK: the good PR passed, the drifted PR was stopped, the release went to @champion"
    print("\ndemo " + (verdict if ok else "FAILED"))
    return 0 if ok else 1


def show_registry(tracking_uri: str) -> None:
    from mlflow import MlflowClient
    from mlgate.registry import Registry, operations

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    registry = Registry(client, tracking_uri, "fraud-detection", "mlgate-audit")
    if not registry.exists():
        print("  (no registered model: the release did not register)")
        return
    for alias, target in operations.status(registry).items():
        print(
            f"  @{alias}: version {target['version']} ({target['variant'] or 'not compressed'}) {target['model_uri']}"
        )
    for record in operations.history(registry):
        approvers = f", approved by {', '.join(record.who.approvers)}" if record.who.approvers else ""
        print(f"  audit: {record.operation} v{record.version} {record.decision} by {record.who.actor}{approvers}: "
              f"{record.reason}")  # fmt: skip


def show_training(tracking_uri: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("fraud-detection")
    if experiment is None:
        print("  (no MLflow experiment: the train job did not run)")
        return
    for run in client.search_runs([experiment.experiment_id], max_results=1):
        metrics = {k: round(v, 4) for k, v in run.data.metrics.items() if k.startswith("holdout_")}
        print(f"  MLflow run {run.info.run_id} ({run.info.status}) on {run.data.tags.get('mlgate.device')}: {metrics}")
        lineage = ("mlgate.git.commit", "mlgate.pr", "mlgate.dvc.data/train.csv", "mlgate.torch")
        print("  lineage: " + ", ".join(f"{k}={run.data.tags.get(k)}" for k in lineage))


if __name__ == "__main__":
    raise SystemExit(main())
