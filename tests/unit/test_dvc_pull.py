"""`dvc pull` in the background (`mlgate.dvcio`): the train and test-model gates start it before they set up MLflow
and the project venv, and wait for it after. A fake `dvc` on the PATH stands in for the real one, so each test can
make it fail, hang or note what it was asked; the real dvc runs in the e2e tests against the example's remote."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from mlgate import cli
from mlgate.config import LoadedConfig, load_config
from mlgate.dvcio import Pull, dvc_pull, pulling
from mlgate.errors import ToolError

# The fake notes each call's arguments (and the remote it was given) in calls.log, then does what the files
# beside it say: hang (as a remote that does not answer), fail the remote add, or fail the pull.
FAKE_DVC = """#!/bin/sh
here=$(dirname "$0")
echo "$*" >> "$here/calls.log"
case "$1" in
  remote) [ -f "$here/remote.fail" ] && { echo "ERROR: bad remote url" >&2; exit 251; }; exit 0 ;;
esac
[ -f "$here/hang" ] && { echo $$ > "$here/pid"; exec sleep 120; }
[ -f "$here/pull.fail" ] && { echo "ERROR: failed to pull data from the cloud" >&2; exit 1; }
echo pulled > train.csv
"""


@pytest.fixture
def fake_dvc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dvc"
    fake.write_text(FAKE_DVC)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlgate.yaml").write_text(
        "version: 1\nproject: p\ndata:\n  dvc: true\n  sources:\n    train: {path: train.csv}\n"
        "    holdout: {path: holdout.csv}\n",
        encoding="utf-8",
    )
    return load_config(root / "mlgate.yaml")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_pull_sets_the_remote_then_pulls_the_named_sources(fake_dvc: Path, loaded: LoadedConfig) -> None:
    dvc_pull(loaded, ["train", "missing"], "s3://bucket/dvc store")
    assert (loaded.root / "train.csv").read_text() == "pulled\n"
    calls = (fake_dvc / "calls.log").read_text().splitlines()
    assert calls == ["remote add --local --force --default mlgate-ci s3://bucket/dvc store", "pull train.csv"]


def test_a_failed_pull_is_a_tool_error_at_the_data_dvc_key(fake_dvc: Path, loaded: LoadedConfig) -> None:
    (fake_dvc / "pull.fail").write_text("")
    pull = Pull(loaded, ["train", "holdout"])
    with pytest.raises(ToolError, match=r"`dvc pull holdout\.csv train\.csv` failed \(exit 1\)") as caught:
        pull.wait()
    assert "failed to pull data from the cloud" in str(caught.value)
    assert caught.value.file == str(loaded.path) and caught.value.line == 4
    assert "--no-dvc-pull" in (caught.value.hint or "")


def test_a_bad_remote_url_is_named_and_nothing_is_pulled(fake_dvc: Path, loaded: LoadedConfig) -> None:
    (fake_dvc / "remote.fail").write_text("")
    with pytest.raises(ToolError, match="cannot set the DVC remote to the given dvc-remote-url") as caught:
        dvc_pull(loaded, ["train"], "nowhere://x")
    assert "bad remote url" in str(caught.value)
    assert "dvc-remote-url input" in (caught.value.hint or "")
    assert (fake_dvc / "calls.log").read_text().count("pull") == 0
    assert not (loaded.root / "train.csv").exists()


def test_a_block_that_fails_stops_the_pull_at_once(fake_dvc: Path, loaded: LoadedConfig) -> None:
    """A gate whose set-up fails (an unreachable server) does not wait for a pull that hangs; its dvc is gone."""
    (fake_dvc / "hang").write_text("")
    started = time.perf_counter()
    with pytest.raises(ValueError, match="set-up failed"), pulling(loaded, ["train"], "/remote", enabled=True):
        deadline = time.monotonic() + 20
        while not (fake_dvc / "pid").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise ValueError("set-up failed")
    assert time.perf_counter() - started < 20
    pid = int((fake_dvc / "pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the dvc process still runs"


def test_the_pull_runs_while_the_block_runs(fake_dvc: Path, loaded: LoadedConfig) -> None:
    """The pull is started before the block (the gate's set-up) and waited for after it."""
    with pulling(loaded, ["train"], None, enabled=True):
        deadline = time.monotonic() + 20
        while not (loaded.root / "train.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (loaded.root / "train.csv").exists(), "the pull did not run during the block"
    assert (fake_dvc / "calls.log").read_text().splitlines() == ["pull train.csv"]


def test_no_pull_when_not_enabled_or_without_dvc(fake_dvc: Path, loaded: LoadedConfig, tmp_path: Path) -> None:
    with pulling(loaded, ["train"], None, enabled=False):
        pass
    (tmp_path / "plain.yaml").write_text("version: 1\nproject: p\ndata:\n  sources: {train: {path: t.csv}}\n")
    with pulling(load_config(tmp_path / "plain.yaml"), ["train"], None, enabled=True):
        pass
    assert not (fake_dvc / "calls.log").exists()


def test_train_against_an_unreachable_server_fails_fast_and_stops_its_pull(
    fake_dvc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The train gate's pull hangs (a remote that does not answer) and the server is unreachable: the gate fails
    on the server, as before the pull moved to the background, and leaves no dvc running."""
    root = tmp_path / "trainproj"
    root.mkdir()
    (root / "mlgate.yaml").write_text(
        f"version: 1\nproject: p\ndata:\n  dvc: true\n  sources: {{train: {{path: train.csv}}}}\n"
        f"train:\n  command: {sys.executable} -c pass\n  device: cpu\n  profiles: {{quick: {{}}}}\n",
        encoding="utf-8",
    )
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (fake_dvc / "hang").write_text("")
    monkeypatch.setenv("MLGATE_MLFLOW_ATTEMPTS", "2")
    monkeypatch.setenv("MLGATE_MLFLOW_BACKOFF_S", "0.01")
    code = cli.main(["train", "--config", str(root / "mlgate.yaml"), "--tracking-uri", "http://127.0.0.1:9/"])
    out = capsys.readouterr().out
    assert code == 4, out
    assert "after 2 attempts" in out and "dvc pull (data.dvc is true)" in out
    deadline = time.monotonic() + 20
    while not (fake_dvc / "pid").is_file() and time.monotonic() < deadline:  # the shell may not have reached it
        time.sleep(0.05)
    if (fake_dvc / "pid").is_file():
        pid = int((fake_dvc / "pid").read_text())
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the dvc process still runs"
