"""No traceback for any input, and nothing left behind by a failure: command lines that do not split,
a dvc.lock of the wrong shape, output paths that cannot be written, usage errors, a tracking server
that does not answer, MLflow runs that must not stay RUNNING, and models downloaded into the temp dir."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import mlgate.modeltest
import mlgate.train
import modeltest_models
import pandas as pd
import pytest
from mlgate import cli, mlflowio
from mlgate.commands import arguments
from mlgate.config import load_config
from mlgate.errors import ConfigError, InputError, ToolError
from mlgate.modeltest import run_model_tests
from mlgate.modeltest.checks import Session
from mlgate.train import lineage, train

TRAIN_CONFIG = """version: 1
project: stub
train:
  command: {command}
  profiles:
    quick: {{epochs: 1}}
  seed: 7
  device: cpu
"""

LOCK = "schema: '2.0'\nstages:\n  gen:\n    cmd: gen\n    outs:\n    - path: data.csv\n      md5: {md5}\n"


@pytest.fixture
def project(tmp_path: Path) -> Callable[[str], Path]:
    """A training project whose train.command is the given text; -> its mlgate.yaml."""

    def make(command: str) -> Path:
        root = tmp_path / "proj"
        root.mkdir(exist_ok=True)
        (root / "mlgate.yaml").write_text(TRAIN_CONFIG.format(command=command))
        (root / "dvc.yaml").write_text("stages: {}\n")
        (root / "dvc.lock").write_text(LOCK.format(md5="0123456789abcdef0123456789abcdef"))
        return root / "mlgate.yaml"

    return make


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts under ./mlruns
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def run_statuses(uri: str, experiment: str = "stub") -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, "no MLflow experiment: the run was never opened"
    return [run.info.status for run in client.search_runs(experiment_ids=[found.experiment_id])]


# --- command lines that do not split ----------------------------------------------------------------------


def test_an_unbalanced_quote_in_train_command_is_a_config_error_at_its_line(
    project: Callable[[str], Path], store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project('"python train.py --name \'it"')  # YAML string: python train.py --name 'it
    with pytest.raises(ConfigError, match=r"train\.command .* does not split into arguments") as caught:
        train(load_config(config), profile="quick", tracking_uri=store)
    assert caught.value.line == 4 and caught.value.file == str(config)
    assert not (Path(store.removeprefix("sqlite:///"))).exists()  # stopped before MLflow was touched
    assert cli.main(["train", "--config", str(config), "--tracking-uri", store]) == 2
    assert "No closing quotation" in capsys.readouterr().out


# --- dvc.lock of the wrong shape ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ([{"stages": {}}], "the top level is a list"),
        ({"stages": ["gen"]}, "`stages` is a list"),
        ({"stages": {"gen": "python gen.py"}}, "`stages.gen` is a string"),
        ({"stages": {"gen": {"outs": {"path": "a"}}}}, "`stages.gen.outs` is a mapping"),
        ({"stages": {"gen": {"deps": ["a.csv"]}}}, "`stages.gen.deps[0]` is a string"),
        ({"stages": {"gen": {"outs": [{"md5": "abc"}]}}}, "`stages.gen.outs[0]` has no `path`"),
        ({"stages": {"gen": {"outs": [{"path": "a.csv", "size": 3}]}}}, "`stages.gen.outs[0]` (a.csv) has no `md5`"),
    ],
)
def test_a_dvc_lock_of_the_wrong_shape_names_the_key(document: object, named: str) -> None:
    with pytest.raises(InputError) as caught:
        lineage.lock_hashes(Path("dvc.lock"), document)
    assert caught.value.message.startswith(f"dvc.lock: {named}")
    assert caught.value.file == "dvc.lock" and "dvc repro" in (caught.value.hint or "")


def test_a_dvc_lock_of_the_right_shape_gives_the_hashes() -> None:
    document = {
        "schema": "2.0",
        "stages": {
            "gen": {
                "deps": [{"path": "gen.py", "md5": "aa"}, {"path": "remote.csv", "repo": {"url": "x"}}],
                "outs": [{"path": "data.csv", "md5": "bb"}, {"path": "s3.csv", "etag": "cc"}],
            },
            "empty": {"cmd": "true"},
        },
    }
    assert lineage.lock_hashes(Path("dvc.lock"), document) == {"gen.py": "aa", "data.csv": "bb"}


def test_a_dvc_lock_of_the_wrong_shape_fails_train_with_exit_3(
    project: Callable[[str], Path], store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project(f"{sys.executable} -c pass")
    (config.parent / "dvc.lock").write_text("- stages\n")
    assert cli.main(["train", "--config", str(config), "--tracking-uri", store]) == 3
    assert "dvc.lock: error: the top level is a list" in capsys.readouterr().out


# --- output paths, checked before the gate does its work ---------------------------------------------------

MODEL_CONFIG = "version: 1\nproject: demo\ndata: { sources: { test: { path: test.csv } } }\n"
MODEL_CONFIG += "model_tests: { holdout: test, label: y }\n"


@pytest.fixture
def model_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mproj"
    root.mkdir()
    (root / "mlgate.yaml").write_text(MODEL_CONFIG)
    (root / "test.csv").write_text("x,y\n1,0\n2,1\n")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the gate ran although its output path cannot be written")

    monkeypatch.setattr(mlgate.modeltest, "run_model_tests", never)
    monkeypatch.chdir(tmp_path)
    return root


@pytest.mark.parametrize(
    ("option", "where", "problem"),
    [
        ("--junit-xml", "reports", "is a folder; name a file"),
        ("--junit-xml", "a-file/model-tests.xml", "a-file is a file, so the file cannot be created"),
        ("--outputs-file", "reports", "is a folder; name a file"),
        ("--outputs-file", "a-file/deeper/out.json", "a-file is a file, so the file cannot be created"),
    ],
)
def test_test_model_refuses_an_unwritable_output_before_it_runs(
    model_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, where: str, problem: str
) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "a-file").write_text("")
    code = cli.main(["test-model", "--config", str(model_project / "mlgate.yaml"), "--model", "models:/m-1",
                     "--tracking-uri", "sqlite:///x.db", "--no-comment", option, where])  # fmt: skip
    out = capsys.readouterr()
    assert code == 3
    assert f"{option} {where}: " in out.out and problem in out.out
    assert "hint: pass " + option in out.err


def test_train_refuses_an_outputs_file_that_is_a_folder_before_training(
    project: Callable[[str], Path], store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project(f"{sys.executable} -c pass")
    (tmp_path / "out").mkdir()
    assert cli.main(["train", "--config", str(config), "--tracking-uri", store, "--outputs-file", "out"]) == 3
    assert "--outputs-file out: is a folder" in capsys.readouterr().out
    assert not Path(store.removeprefix("sqlite:///")).exists()  # nothing was tracked, let alone trained


def test_validate_data_refuses_a_docs_dir_that_is_a_file(
    model_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").write_text("")
    code = cli.main(["validate-data", "--config", str(model_project / "mlgate.yaml"), "--docs-dir", "docs"])
    assert code == 3
    assert "--docs-dir docs: is a file, not a folder" in capsys.readouterr().out


def test_schema_output_under_a_file_is_refused_and_missing_folders_are_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    assert cli.main(["schema", "--output", "a-file/schema.json"]) == 3
    assert "--output a-file/schema.json: " in capsys.readouterr().out
    assert cli.main(["schema", "--output", "new/folder/schema.json"]) == 0
    assert '"properties"' in (tmp_path / "new" / "folder" / "schema.json").read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="is not writable"):
            arguments.require_output("--junit-xml", locked / "sub" / "x.xml")
    finally:
        locked.chmod(0o700)


# --- usage errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["train", "--device", "tpu"], ["no-such-gate"], ["schema", "--nope"]])
def test_a_usage_error_exits_3_with_a_hint(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 3
    err = capsys.readouterr().err
    assert "usage: mlgate" in err and "error:" in err and "hint: see `mlgate" in err


# --- a tracking server that does not answer ----------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_test_model_against_a_server_that_does_not_answer_fails_after_bounded_attempts(
    model_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mlgate.modeltest, "run_model_tests", run_model_tests)  # the real one, this time

    def no_models(*args: object, **kwargs: object) -> None:
        raise AssertionError("pytest started (models would load) although the server does not answer")

    monkeypatch.setattr(mlgate.modeltest, "stream", no_models)
    monkeypatch.setenv("MLGATE_MLFLOW_ATTEMPTS", "2")
    monkeypatch.setenv("MLGATE_MLFLOW_BACKOFF_S", "0.01")
    uri = f"http://127.0.0.1:{unused_port()}"
    code = cli.main(["test-model", "--config", str(model_project / "mlgate.yaml"), "--model", "models:/m-1",
                     "--tracking-uri", uri, "--no-comment"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 4
    assert f"MLflow tracking server {uri}: reaching the server failed after 2 attempts" in out
    assert "(attempt 1/2)" in out


def test_a_bad_attempts_setting_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGATE_MLFLOW_ATTEMPTS", "four")
    with pytest.raises(InputError, match="MLGATE_MLFLOW_ATTEMPTS='four' is not a positive number"):
        mlflowio.with_retries("probing", "http://h:1", lambda: None)


def test_child_processes_get_bounded_mlflow_http_settings_unless_the_user_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mlflowio, "_set_by_mlgate", {})
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's
    mlflowio.bound_requests()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"  # mlgate's own requests fail fast
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    env = mlgate.train._environment(None, "r", "e", "sqlite:///x.db", "quick", {}, 1, "cpu", False)
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == mlflowio.HTTP_ENV_CHILD["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


@pytest.mark.parametrize("users", [None, "false"], ids=["unset", "user-opted-in"])
def test_mlflow_telemetry_is_off_in_mlgate_and_its_children_unless_the_user_set_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, users: str | None
) -> None:
    if users is None:
        monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", users)
    expected = users or "true"
    assert cli.main(["schema", "--output", str(tmp_path / "schema.json")]) == 0
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == expected  # mlgate's own process, before any gate ran
    env = mlgate.train._environment(None, "r", "e", "sqlite:///x.db", "quick", {}, 1, "cpu", False)
    assert env["MLFLOW_DISABLE_TELEMETRY"] == expected
    assert mlflowio.child_env({})["MLFLOW_DISABLE_TELEMETRY"] == expected  # built from scratch, not a copy


# --- no MLflow run left RUNNING -----------------------------------------------------------------------------


def test_a_training_command_that_is_not_found_ends_its_run_failed(
    project: Callable[[str], Path], store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project("no-such-trainer-3f9 --epochs 1")
    assert cli.main(["train", "--config", str(config), "--tracking-uri", store]) == 4
    out = capsys.readouterr().out
    assert "'no-such-trainer-3f9' not found" in out and "marked FAILED" in out
    assert run_statuses(store) == ["FAILED"]


def test_a_training_command_that_cannot_start_is_a_tool_error_and_ends_its_run_failed(
    project: Callable[[str], Path], store: str, tmp_path: Path
) -> None:
    script = tmp_path / "train.sh"
    script.write_text("echo no interpreter line\n")  # executable, but exec() refuses it
    script.chmod(0o755)
    with pytest.raises(ToolError, match="cannot start the training command"):
        train(load_config(project(str(script))), profile="quick", tracking_uri=store)
    assert run_statuses(store) == ["FAILED"]


@pytest.mark.parametrize(
    ("raised", "status"), [(ToolError("venv build failed"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_any_failure_after_the_run_opened_ends_it(
    project: Callable[[str], Path], store: str, monkeypatch: pytest.MonkeyPatch, raised: BaseException, status: str
) -> None:
    def fail(*args: object, **kwargs: object) -> dict[str, str]:
        raise raised

    monkeypatch.setattr(mlgate.train, "_environment", fail)
    with pytest.raises(type(raised)):
        train(load_config(project(f"{sys.executable} -c pass")), profile="quick", tracking_uri=store)
    assert run_statuses(store) == [status]


# --- downloaded models do not pile up in the temp dir ------------------------------------------------------


@pytest.fixture
def logged_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, Path]]:
    """(tracking URI, model URI, project mlgate.yaml): a logistic pyfunc in a sqlite store, a labelled holdout."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = MlflowClient(tracking_uri=uri).create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
    frame = pd.DataFrame({"amount": [10.0, 900.0, 20.0, 700.0], "velocity": [1, 9, 2, 8], "label": [0, 1, 0, 1]})
    root = tmp_path / "proj"
    root.mkdir()
    frame.to_csv(root / "holdout.csv", index=False)
    (root / "mlgate.yaml").write_text(
        "version: 1\nproject: t\ndata: { sources: { holdout: { path: holdout.csv } } }\n"
        "model_tests: { holdout: holdout, label: label, performance: { metrics: { roc_auc: 0.5 } }, tests: [tests] }\n"
    )
    # The project's own test writes into pytest's tmp_path, which pytest keeps under the temp dir.
    (root / "tests").mkdir()
    (root / "tests" / "test_own.py").write_text("def test_writes(tmp_path):\n    (tmp_path / 'x').write_text('1')\n")
    # MLflow's global tracking URI wins over the environment (and the in-process Session reads it): point it
    # at this store for the test and put it back afterwards.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            model = modeltest_models.Logistic()
            inputs = frame[["amount", "velocity"]]
            info = mlflow.pyfunc.log_model(
                name="m", python_model=model, signature=infer_signature(inputs, model.predict(None, inputs)),
                code_paths=[modeltest_models.__file__], pip_requirements=["mlflow"],
            )  # fmt: skip
        yield uri, info.model_uri, root / "mlgate.yaml"
    finally:
        mlflow.set_tracking_uri(previous)


def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return temp


def test_a_test_model_run_leaves_nothing_in_the_temp_dir(
    logged_model: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, model_uri, config = logged_model
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    temp = temp_dir(tmp_path, monkeypatch)
    before = sorted(temp.iterdir())
    for _ in range(2):
        report = run_model_tests(
            load_config(config), candidate_uri=model_uri, tracking_uri=uri, junit_path=tmp_path / "junit.xml"
        )
        assert report.passed, report.log_tail
        assert sorted(temp.iterdir()) == before


def test_a_session_downloads_its_models_into_a_folder_it_removes(
    logged_model: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    # A local store hands out its own files; a server's downloads them (into a new temp dir by default): make
    # this store's artifacts download like a server's, and leave local paths (a downloaded model) as they are.
    _, model_uri, config = logged_model
    store_artifacts = str(tmp_path / "a")
    hand_out = LocalArtifactRepository.download_artifacts

    def like_a_server(self: LocalArtifactRepository, artifact_path: str, dst_path: str | None = None) -> str:
        if self.artifact_dir.startswith(store_artifacts):
            return str(ArtifactRepository.download_artifacts(self, artifact_path, dst_path))
        return str(hand_out(self, artifact_path, dst_path))

    monkeypatch.setattr(LocalArtifactRepository, "download_artifacts", like_a_server)
    temp = temp_dir(tmp_path, monkeypatch)
    session = Session(load_config(config), model_uri)
    downloads = [path.name for path in temp.iterdir()]
    assert len(downloads) == 1 and downloads[0].startswith("mlgate-models-")  # MLflow's own temp dirs: none
    session.close()
    assert list(temp.iterdir()) == []
    with pytest.raises(InputError, match="cannot load model"):
        Session(load_config(config), "models:/m-does-not-exist")
    assert list(temp.iterdir()) == []  # a failed load removes its folder too
