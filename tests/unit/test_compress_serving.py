"""A compressed variant is served by `mlflow models serve` exactly like the original: same input columns,
same output column, the same scores within the INT8 tolerance. The variant comes from the compress
worker itself (in process), logged to a sqlite store; the server runs on 127.0.0.1 in its own process
group and is stopped with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import compress_models
import numpy as np
import pandas as pd
import pytest
import yaml
from mlgate.compress.worker import Worker
from mlgate.config import load_config
from mlgate.statefile import free_port

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = ROOT / ".venv" / "bin" / "mlflow"


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import mlflow

    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    frame = compress_models.tabular_frame(1500, seed=3)
    frame.iloc[:1000].to_csv(root / "train.csv", index=False)
    frame.iloc[1000:].to_csv(root / "test.csv", index=False)
    config = {
        "version": 1,
        "project": "serving",
        "data": {"sources": {"train": {"path": "train.csv"}, "test": {"path": "test.csv"}}},
        "model_tests": {"holdout": "test", "label": "label", "score": "score", "threshold": 0.5},
        "compress": {"methods": ["onnx", "int8"], "latency_batches": [1], "latency_repeats": 3},
    }
    (root / "mlgate.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    experiment = mlflow.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = compress_models.log_pyfunc(compress_models.train_mlp(frame.iloc[:1000], epochs=4), "mlp", frame)
    try:
        report = Worker(load_config(root / "mlgate.yaml"), info.model_uri, root / "work").run()
        int8 = next(v for v in report["variants"] if v["name"] == "onnx-int8")
        yield {"uri": uri, "original": info.model_uri, "int8": int8, "rows": frame.iloc[1000:1040], "root": root}
    finally:
        mlflow.set_tracking_uri(previous)


def serve(model_uri: str, tracking_uri: str, cwd: Path) -> Iterator[str]:
    port = free_port()
    # The server starts uvicorn from PATH: the one of this venv, beside the mlflow it runs.
    path = f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true", PATH=path)
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    process = subprocess.Popen(
        [str(MLFLOW), "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                pytest.fail(f"mlflow models serve exited with {process.returncode}:\n{output[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not answer /ping within 120 s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def invoke(url: str, rows: pd.DataFrame) -> list[dict[str, Any]]:
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    return list(answer["predictions"])


def test_mlflow_models_serve_serves_the_int8_variant_like_the_original(variant: dict[str, Any]) -> None:
    import mlflow.pyfunc

    rows = variant["rows"][compress_models.NUMERIC]
    original = mlflow.pyfunc.load_model(variant["original"]).predict(rows)
    for url in serve(variant["int8"]["model_uri"], variant["uri"], variant["root"]):
        served = invoke(url, rows)
    assert len(served) == len(rows)
    assert set(served[0]) == set(original.columns) == {"score"}  # the original's output column, by name
    scores = np.array([row["score"] for row in served])
    assert np.abs(scores - original["score"].to_numpy()).max() <= max(variant["int8"]["max_abs_diff"], 1e-6) + 1e-9
    assert not np.allclose(scores, scores[0])  # real scores, not a constant
