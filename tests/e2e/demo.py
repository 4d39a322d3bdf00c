"""`make demo`: the example project's pull-request workflow under act, on this checkout.

Two pull requests: one with good data, which passes, and one whose training data drifted,
which the data gate stops with the drifted features named. Each run is what `mlgate ci pr.yml`
does (the e2e harness calls the same `run_local_ci`), against one MLflow server for both, so the
trained model can be read back. Uses only loopback and temp folders.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlgate.localci import MlflowServer

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
    ok = good_result.returncode == 0 and drifted_result.returncode != 0
    print("\ndemo " + ("OK: the good PR passed and trained; the drifted PR was stopped" if ok else "FAILED"))
    return 0 if ok else 1


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
