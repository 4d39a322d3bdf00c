"""The training gate against a real MLflow store (sqlite), with a small training script standing in
for a model project's: profile, seed and device reach it, lineage tags and the model land on the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlgate import cli
from mlgate.config import load_config
from mlgate.errors import ConfigError, GateFailed, InputError, ToolError
from mlgate.train import tracking, train
from mlgate.train.device import DeviceInfo, choose

TRAIN_SCRIPT = """
import os, random, sys
import mlflow
from mlgate_runtime import setup

class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0.5] * len(model_input)

ctx = setup()
if ctx.param("crash"):
    print("loading data/train.csv"); print("ValueError: column amount is missing"); sys.exit(3)
with mlflow.start_run():
    for epoch in range(ctx.param("epochs", 1)):
        mlflow.log_metric("train_loss", 1.0 / (epoch + 1), step=epoch)
    noise = int.from_bytes(os.urandom(2), "big") if ctx.param("nondeterministic") else 0
    if not ctx.param("skip_metric"):
        mlflow.log_metric("holdout_auc", round(random.random(), 6) + noise)
    mlflow.log_metric("device_is_cpu", 1.0 if ctx.device == "cpu" else 0.0)
    mlflow.log_metric("seed_seen", ctx.seed)
    if not ctx.param("no_model"):
        mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"])
print("trained", ctx.profile, ctx.params)
"""

CONFIG = """version: 1
project: stub
train:
  command: {command}
  profiles:
    quick: {{epochs: 2}}
    crash: {{crash: true}}
    nometric: {{skip_metric: true}}
    nomodel: {{no_model: true}}
    noisy: {{nondeterministic: true}}
  seed: 7
  device: cpu
  metrics: [holdout_auc]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "train_stub.py").write_text(TRAIN_SCRIPT)
    (root / "mlgate.yaml").write_text(CONFIG.format(command=f"{sys.executable} train_stub.py"))
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  generate:\n    cmd: gen\n    outs:\n    - path: data/train.csv\n"
        "      hash: md5\n      md5: 0123456789abcdef0123456789abcdef\n      size: 10\n"
    )
    subprocess.run(["git", "init", "-q", "-b", "feature/x"], cwd=root, check=True)
    return root


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # A sqlite store keeps artifacts under ./mlruns of the working directory: keep them in tmp_path.
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_run_carries_params_lineage_metrics_and_model(project: Path, store: str) -> None:
    report = train(load_config(project / "mlgate.yaml"), profile="quick", tracking_uri=store)
    run = _client(store).get_run(report.main.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2"
    assert run.data.params["mlgate.profile"] == "quick"
    tags = run.data.tags
    assert tags["mlgate.profile"] == "quick"
    assert tags["mlgate.seed"] == "7"
    assert tags["mlgate.device"] == "cpu"
    assert tags["mlgate.git.branch"] == "feature/x"
    assert tags["mlgate.dvc.data/train.csv"] == "0123456789abcdef0123456789abcdef"
    assert len(tags["mlgate.config_sha256"]) == 64
    assert tags["mlgate.python"].startswith("3.")
    assert report.main.metrics["seed_seen"] == 7
    assert report.main.metrics["device_is_cpu"] == 1.0
    history = _client(store).get_metric_history(report.main.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1]
    assert report.main.model_uri and report.main.model_uri.startswith("models:/")
    model = _client(store).get_logged_model(report.main.model_id)
    assert model.tags["mlgate.profile"] == "quick"
    artifacts = [a.path for a in _client(store).list_artifacts(report.main.run_id, "mlgate")]
    assert "mlgate/train.log" in artifacts


def test_cli_writes_outputs_and_summary(
    project: Path, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs, summary = tmp_path / "out.txt", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = cli.main(["train", "--config", str(project / "mlgate.yaml"), "--tracking-uri", store])
    assert code == 0
    text = outputs.read_text()
    assert "run-id<<" in text and "model-uri<<" in text
    assert "holdout_auc" in summary.read_text()
    assert "fell back" not in summary.read_text()  # device: cpu was asked for, not a fallback
    assert '"training":' in text  # the timings output: seconds per phase


def test_local_run_writes_its_outputs_to_a_file_and_prints_the_model_uri(
    project: Path, store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "MLGATE_INPUT_OUTPUTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["train", "--config", str(project / "mlgate.yaml"), "--tracking-uri", store]) == 0
    outputs = json.loads((project / "mlgate-outputs" / "train.json").read_text())
    assert outputs["model-uri"].startswith("models:/m-")
    assert outputs["profile"] == "quick" and outputs["device"] == "cpu" and outputs["reproducible"] is None
    assert outputs["metrics"]["seed_seen"] == 7
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert f"model-uri: {outputs['model-uri']}" in lines and f"run-id: {outputs['run-id']}" in lines
    assert lines[-1] == "outputs file: proj/mlgate-outputs/train.json"  # relative to the working directory
    assert "### " not in out.err and "mlgate train: ✅ trained (profile quick)" in out.err  # the summary, as text


def test_undeclared_profile_names_the_declared_ones(project: Path, store: str) -> None:
    with pytest.raises(ConfigError) as caught:
        train(load_config(project / "mlgate.yaml"), profile="full", tracking_uri=store)
    assert "'full'" in caught.value.message and "quick" in caught.value.message
    assert caught.value.line == 5


def test_failing_training_marks_the_run_failed_and_shows_the_last_lines(project: Path, store: str) -> None:
    with pytest.raises(GateFailed) as caught:
        train(load_config(project / "mlgate.yaml"), profile="crash", tracking_uri=store)
    assert "exit code 3" in caught.value.message
    assert "column amount is missing" in caught.value.message
    runs = _client(store).search_runs(experiment_ids=[_client(store).get_experiment_by_name("stub").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_missing_declared_metric_fails(project: Path, store: str) -> None:
    with pytest.raises(GateFailed, match="did not log holdout_auc"):
        train(load_config(project / "mlgate.yaml"), profile="nometric", tracking_uri=store)


def test_missing_model_fails(project: Path, store: str) -> None:
    with pytest.raises(GateFailed, match="logged no model"):
        train(load_config(project / "mlgate.yaml"), profile="nomodel", tracking_uri=store)


def test_repro_check_passes_for_a_seeded_run_and_fails_for_a_noisy_one(project: Path, store: str) -> None:
    loaded = load_config(project / "mlgate.yaml")
    same = train(loaded, profile="quick", tracking_uri=store, repro_check=True)
    assert same.repro_checked and not same.repro_differences
    assert same.runs[0].metrics["holdout_auc"] == same.runs[1].metrics["holdout_auc"]
    assert _client(store).get_run(same.runs[1].run_id).data.tags["mlgate.repro_of"] == same.runs[0].run_id
    noisy = train(loaded, profile="noisy", tracking_uri=store, repro_check=True)
    assert set(noisy.repro_differences) == {"holdout_auc"}


def test_repro_failure_exits_non_zero_showing_both_values(
    project: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["train", "--config", str(project / "mlgate.yaml"), "--tracking-uri", store, "--profile", "noisy",
         "--repro-check"]
    )  # fmt: skip
    assert code == 1
    assert "holdout_auc:" in capsys.readouterr().out


def test_missing_dvc_lock_is_named(project: Path, store: str) -> None:
    (project / "dvc.lock").unlink()
    with pytest.raises(InputError, match=r"dvc\.lock: not found"):
        train(load_config(project / "mlgate.yaml"), profile="quick", tracking_uri=store)


def test_require_gpu_without_gpu_fails_before_any_run(project: Path, store: str) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(ToolError, match="no CUDA GPU visible") as caught:
        train(load_config(project / "mlgate.yaml"), profile="quick", tracking_uri=store, require_gpu=True)
    assert "self-hosted" in (caught.value.hint or "")
    assert not Path(store.removeprefix("sqlite:///")).exists()  # failed before touching MLflow


def test_unreachable_server_is_named_without_secrets(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLGATE_MLFLOW_ATTEMPTS", "2")
    monkeypatch.setenv("MLGATE_MLFLOW_BACKOFF_S", "0.01")
    uri = "http://ci-bot:s3cr3t-t0ken@127.0.0.1:9/mlflow"  # port 9 (discard): nothing listens
    code = cli.main(["train", "--config", str(project / "mlgate.yaml"), "--tracking-uri", uri])
    out = capsys.readouterr()
    assert code == 4
    assert "http://***@127.0.0.1:9/mlflow" in out.out
    assert "after 2 attempts" in out.out
    assert "s3cr3t-t0ken" not in out.out + out.err


def test_redact_and_scrub() -> None:
    uri = "https://user:pw@mlflow.example.com:8443/path?token=abc"
    assert tracking.redact(uri) == "https://***@mlflow.example.com:8443/path"
    assert tracking.redact("sqlite:///x.db") == "sqlite:///x.db"
    assert "pw" not in tracking.scrub(f"failed to reach {uri}: pw rejected", uri)


def test_with_retries_backs_off_then_gives_up() -> None:
    waits: list[float] = []

    def boom() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ToolError, match="after 3 attempts: ConnectionError: refused"):
        tracking.with_retries("probing", "http://h:1", boom, attempts=3, backoff_s=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0]


def _info(**overrides: object) -> DeviceInfo:
    base: dict[str, object] = {
        "python": "3.11.7", "torch": "2.13.0+cpu", "cuda_available": False, "torch_cuda": None, "device_count": 0,
    }  # fmt: skip
    base.update(overrides)
    return DeviceInfo(**base)  # type: ignore[arg-type]


def test_device_choice_names_the_cause_and_falls_back_when_allowed() -> None:
    with pytest.raises(ToolError, match="CPU-only build"):
        choose(_info(), "auto", require_gpu=True)
    with pytest.raises(ToolError, match="not installed in the project environment"):
        choose(_info(torch=None), "cuda", require_gpu=False)
    with pytest.raises(ToolError, match="sees no GPU with driver 580"):
        choose(_info(torch="2.13.0", torch_cuda="13.0", driver="580.1"), "auto", require_gpu=True)
    fallback = choose(_info(), "auto", require_gpu=False)
    assert fallback.chosen == "cpu" and "fell back" in fallback.note
    gpu = _info(
        cuda_available=True, torch_cuda="13.0", device_count=1, gpus=[{"name": "NVIDIA H100", "memory_gib": 79.6}]
    )
    assert choose(gpu, "auto", require_gpu=True).chosen == "cuda"
    assert choose(gpu, "cpu", require_gpu=False).chosen == "cpu"


def test_a_project_without_torch_trains_on_the_cpu_without_a_gpu_warning() -> None:
    # A scikit-learn project has no GPU to miss: "no GPU visible" on its every run would be noise.
    chosen = choose(_info(torch=None, torch_cuda=None), "auto", require_gpu=False)
    assert chosen.chosen == "cpu"
    assert chosen.note == "CPU (the project environment has no torch)"
    assert not chosen.note.startswith("no GPU")  # what `mlgate train` warns on


def test_dvc_stage_runs_with_force_and_is_tracked(project: Path, store: str) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=project, check=True, env=env)
    (project / "dvc.yaml").write_text(
        f"stages:\n  train:\n    cmd: {sys.executable} train_stub.py\n    deps: [train_stub.py]\n"
    )
    config = (project / "mlgate.yaml").read_text().replace(f"command: {sys.executable} train_stub.py", "stage: train")
    (project / "mlgate.yaml").write_text(config)
    loaded = load_config(project / "mlgate.yaml")
    first = train(loaded, profile="quick", tracking_uri=store)
    second = train(loaded, profile="quick", tracking_uri=store)  # --force: DVC must not skip the stage
    for report in (first, second):
        assert report.main.status == "FINISHED" and "holdout_auc" in report.main.metrics


def test_sql_store_needs_mlflow_sql_backend_in_the_project_venv(tmp_path: Path) -> None:
    # A project venv with mlflow-skinny (here: a bare venv) cannot log to sqlite:///: said before training.
    import venv

    from mlgate.train import require_sql_store

    venv.create(tmp_path / "bare", with_pip=False)
    bare_python = tmp_path / "bare" / "bin" / "python"
    with pytest.raises(ToolError) as caught:
        require_sql_store(bare_python, "sqlite:///mlflow.db")
    assert "sqlalchemy and alembic are not installed" in caught.value.message
    assert "mlflow-skinny" in caught.value.message and caught.value.hint and "environment.install" in caught.value.hint
    require_sql_store(bare_python, "http://127.0.0.1:5000")  # a server: the project venv needs no SQL store
    require_sql_store(sys.executable, "sqlite:///mlflow.db")  # mlgate's dev venv has the SQL backend


def test_tags_and_params_mlgate_writes_to_mlflow_are_redacted(
    project: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Canaries: a token in the server URL a tag is built from, a registered secret in the branch name, and
    # a profile param holding a URI with user info (the training command gets it whole, the run does not).
    token, secret, param_password = "canary-srv-6a1f", "canary-branch-0c2e", "canary-param-9b47"
    monkeypatch.setenv("GITHUB_SERVER_URL", f"https://x-access-token:{token}@github.example")
    monkeypatch.setenv("GITHUB_REPOSITORY", "example/fraud")
    monkeypatch.setenv("GITHUB_HEAD_REF", f"fix/{secret}")
    monkeypatch.setenv("HF_TOKEN", secret)
    for name in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "MLGATE_INPUT_OUTPUTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    config = project / "mlgate.yaml"
    config.write_text(
        config.read_text().replace(
            "quick: {epochs: 2}", f"quick: {{epochs: 2, data: 'https://bob:{param_password}@d.example/x'}}"
        )
    )
    assert cli.main(["train", "--config", str(config), "--tracking-uri", store]) == 0
    outputs = json.loads((project / "mlgate-outputs" / "train.json").read_text())
    client = _client(store)
    run = client.get_run(outputs["run-id"])
    written = json.dumps([run.data.tags, run.data.params, client.get_logged_model(outputs["model-uri"][8:]).tags])
    for canary in (token, secret, param_password):
        assert canary not in written
    assert run.data.tags["mlflow.source.git.repoURL"] == "https://***@github.example/example/fraud"
    assert run.data.tags["mlgate.git.branch"] == "fix/***"
    assert run.data.params["data"] == "https://***@d.example/x"
    assert run.data.params["epochs"] == "2"


def test_without_a_driver_the_venvs_files_say_what_importing_torch_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlgate.train import device

    python = Path(sys.executable)  # this venv has the CPU torch, as a project venv on a CPU runner
    read = device.read_without_import(python)
    monkeypatch.setattr(device, "driver_visible", lambda: True)  # forces the subprocess that imports torch
    imported = device.probe(python)
    assert read is not None and read == imported
    # A venv without torch (a scikit-learn project) reads as such; a venv whose torch/version.py is not as
    # expected, or no venv at all, is left to the probe.
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    assert device.read_without_import(venv / "bin" / "python") == device.DeviceInfo(
        python="3.11.7", torch=None, cuda_available=False, torch_cuda=None, device_count=0
    )
    (site / "torch").mkdir()
    (site / "torch" / "version.py").write_text("def __getattr__(name): ...\n")
    assert device.read_without_import(venv / "bin" / "python") is None
    assert device.read_without_import(tmp_path / "no-venv" / "bin" / "python") is None
