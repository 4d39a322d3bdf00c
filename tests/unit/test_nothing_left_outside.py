"""Nothing left outside the project by the release gates: `mlgate serve` removes the copy of the model it
downloaded when it stops (and when the load fails), onnxruntime writes no device id into the home folder of
mlgate's processes, and the dvc that mlgate runs keeps its site cache in the project, not in /var/tmp/dvc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import modeltest_models
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlgate import mlflowio
from mlgate.config import load_config
from mlgate.dvcio import SITE_CACHE_ENV, dvc_pull
from mlgate.procio import stop_group
from mlgate.serve.app import Settings, create_app
from mlgate.statefile import free_port
from modeltest_models import Logistic

MLGATE = Path(sys.executable).parent / "mlgate"
DVC = Path(sys.executable).parent / "dvc"
ROWS = pd.DataFrame({"amount": [12.5, 480.0], "velocity": [1.0, 4.0]})
READY_WITHIN_S = 120  # a bound for a stuck load, not a timing assertion


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# --- mlgate serve: the downloaded model is removed when the server stops ----------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server with proxied artifacts (a models:/ URI is downloaded from it, not read in place):
    `fraud` v1, and `broken` v1, whose warm-up prediction on its input example fails."""
    from mlgate.localci.mlflow_server import MlflowServer

    running = MlflowServer(tmp_path_factory.mktemp("server")).start()
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(running.uri)
        mlflow.set_registry_uri(running.uri)
        signature = infer_signature(ROWS, Logistic().predict(None, ROWS))
        big = pd.concat([ROWS] * 60, ignore_index=True)  # past the 100 rows `small-batches` takes
        for name, model, example in (("fraud", Logistic(), ROWS), ("broken", Logistic(output="small-batches"), big)):
            with mlflow.start_run():
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=model,
                    code_paths=[modeltest_models.__file__],
                    signature=signature,
                    input_example=example,
                    pip_requirements=["mlflow"],
                )
            version = mlflow.register_model(info.model_uri, name)
            MlflowClient().set_registered_model_alias(name, "champion", version.version)
        yield running.uri
    finally:
        mlflow.set_tracking_uri(previous)
        running.stop()


def wait_loaded(client: TestClient) -> dict[str, Any]:
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        body: dict[str, Any] = client.get("/ready").json()
        if body["ready"] or not body["reason"].startswith("loading"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("uri", "ready"), [("models:/fraud@champion", True), ("models:/broken@champion", False)], ids=["served", "failed"]
)
def test_the_downloaded_model_is_removed_when_the_server_stops_or_fails_to_load(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, ready: bool
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.delenv("RUNNER_TEMP", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # MLflow's own download place, and mlgate's
    app = create_app(Settings(uri, tracking_uri=server))
    with TestClient(app) as client:
        body = wait_loaded(client)
        assert body["ready"] is ready, body
        if ready:
            downloaded = [path for path in temp.iterdir() if (path / "MLmodel").is_file()]
            assert downloaded, files_under(temp)  # the model was downloaded into the temp folder
            assert client.post("/invocations", json={"inputs": ROWS.to_dict(orient="list")}).status_code == 200
        else:
            assert "warm-up prediction" in body["reason"], body
            assert files_under(temp) == []  # removed at once: a server that cannot serve keeps no copy
    assert files_under(temp) == []


# --- onnxruntime's telemetry: no device id in the home folder ---------------------------------------------


def onnx_model() -> Any:
    from onnx import TensorProto, helper

    rows = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [rows], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/ready", timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def test_serving_an_onnx_model_writes_nothing_into_home_or_the_temp_folder(tmp_path: Path) -> None:
    """onnxruntime's first session writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid (and its
    telemetry queue) unless ORT_DISABLE_TELEMETRY=1, which mlgate sets; the download of the models:/ URI
    lies in TMPDIR while the server runs and is gone once it stopped."""
    import mlflow.onnx

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with mlflow.start_run():
            info = mlflow.onnx.log_model(onnx_model(), name="model")
        mlflow.register_model(info.model_uri, "relu")
    finally:
        mlflow.set_tracking_uri(previous)
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORT_", "MLFLOW_", "XDG_", "RUNNER_"))}
    env.update(HOME=str(home), TMPDIR=str(temp))
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(
        [str(MLGATE), "serve", "--model", "models:/relu/1", "--tracking-uri", uri, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        while not _ready(base):
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        request = urllib.request.Request(
            base + "/invocations",
            data=json.dumps({"inputs": {"x": [[1.0, -2.0]]}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        assert any(name.startswith("mlgate-serve-model-") for name in os.listdir(temp)), files_under(temp)
    finally:
        stop_group(server, grace_s=30)  # SIGTERM, then SIGKILL to the group after 30 s
    text = (tmp_path / "serve.log").read_text()
    assert "Application shutdown complete" in text, text
    assert files_under(home) == [], text
    assert files_under(temp) == [], text


def test_onnxruntime_s_switch_is_in_mlgate_s_telemetry_opt_out() -> None:
    assert mlflowio.TELEMETRY_ENV["ORT_DISABLE_TELEMETRY"] == "1"
    assert mlflowio.child_env({})["ORT_DISABLE_TELEMETRY"] == os.environ.get("ORT_DISABLE_TELEMETRY", "1")


# --- DVC's site cache: in the project, not /var/tmp/dvc -----------------------------------------------------


def _dvc(root: Path, *args: str, site_cache: Path) -> None:
    env = {**os.environ, SITE_CACHE_ENV: str(site_cache)}  # the set-up's own dvc commands stay out of /var/tmp too
    done = subprocess.run([str(DVC), *args], cwd=root, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _var_tmp_repos() -> set[str]:
    folder = Path("/var/tmp/dvc/repo")
    return set(os.listdir(folder)) if folder.is_dir() else set()


@pytest.mark.skipif(not DVC.is_file(), reason="dvc is not installed in this environment")
def test_a_dvc_pull_through_mlgate_keeps_dvc_s_site_cache_in_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, remote, setup_cache = tmp_path / "proj", tmp_path / "remote", tmp_path / "setup-site-cache"
    root.mkdir()
    (root / "mlgate.yaml").write_text(
        "version: 1\nproject: p\ndata:\n  dvc: true\n  sources:\n    train: {path: train.csv}\n", encoding="utf-8"
    )
    (root / "train.csv").write_text("x,y\n1,0\n2,1\n", encoding="utf-8")
    _dvc(root, "init", "--no-scm", site_cache=setup_cache)
    _dvc(root, "remote", "add", "--default", "local", str(remote), site_cache=setup_cache)
    _dvc(root, "add", "train.csv", site_cache=setup_cache)
    _dvc(root, "push", site_cache=setup_cache)
    (root / "train.csv").unlink()
    shutil.rmtree(root / ".dvc" / "cache")
    monkeypatch.delenv(SITE_CACHE_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{DVC.parent}{os.pathsep}{os.environ['PATH']}")
    before = _var_tmp_repos()
    dvc_pull(load_config(root / "mlgate.yaml"), ["train"])
    assert (root / "train.csv").read_text(encoding="utf-8") == "x,y\n1,0\n2,1\n"
    assert _var_tmp_repos() - before == set()
    assert (root / ".dvc" / "tmp" / "site_cache" / "repo").is_dir()
