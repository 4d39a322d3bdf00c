"""`mlgate test-model` run by hand: its outputs land in a JSON file and on the terminal, and a PR comment
that cannot be posted says why. The model-test run itself is replaced by a finished report."""

from __future__ import annotations

import json
from pathlib import Path

import mlgate.modeltest
import pytest
from mlgate.cli import main
from mlgate.modeltest import ModelTestReport

CONFIG = "version: 1\nproject: demo\ndata: { sources: { test: { path: test.csv } } }\n"
CONFIG += "model_tests: { holdout: test, label: y }\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlgate.yaml").write_text(CONFIG)
    report = ModelTestReport(
        raw={
            "passed": True,
            "promotable": True,
            "promotion": "first model of the project",
            "candidate": {"uri": "models:/m-1", "threshold": 0.5, "metrics": {"roc_auc": 0.91}},
            "holdout": {"source": "test", "rows": 10},
            "checks": [],
            "tests": [],
        },
        exit_code=0,
        junit_path=root / "mlgate-reports" / "model-tests.xml",
    )
    monkeypatch.setattr(mlgate.modeltest, "run_model_tests", lambda loaded, **kwargs: report)
    for name in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_EVENT_PATH", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLGATE_INPUT_OUTPUTS_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    return root


def run(project: Path, *extra: str) -> int:
    return main(["test-model", "--config", str(project / "mlgate.yaml"), "--model", "models:/m-1",
                 "--tracking-uri", "sqlite:///x.db", *extra])  # fmt: skip


def test_outputs_are_written_to_a_file_in_the_project_and_printed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(project, "--no-comment") == 0
    outputs = json.loads((project / "mlgate-outputs" / "test-model.json").read_text())
    assert outputs["passed"] is True and outputs["promotable"] is True
    assert outputs["metrics"] == {"candidate": {"roc_auc": 0.91}, "champion": None}
    assert outputs["model-uri"] == "models:/m-1"
    out = capsys.readouterr().out.splitlines()
    assert "passed: true" in out and "promotable: true" in out
    assert "outputs file: proj/mlgate-outputs/test-model.json" in out  # relative to the working directory
    assert not any("PR comment" in line for line in out)  # --no-comment: nothing to explain


def test_outputs_file_can_be_named(project: Path, tmp_path: Path) -> None:
    assert run(project, "--no-comment", "--outputs-file", "out/tm.json") == 0
    assert json.loads((tmp_path / "out" / "tm.json").read_text())["passed"] is True


def test_a_comment_that_cannot_be_posted_says_why(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project) == 0
    out = capsys.readouterr().out
    assert "notice: PR comment not posted: not a pull request's workflow run" in out


def test_in_a_pull_request_without_a_token_the_notice_says_how_to_give_one(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "github-output"))
    assert run(project) == 0
    out = capsys.readouterr().out
    assert "::notice title=mlgate PR comment::PR comment not posted: no token; pass the github-token input" in out
    assert "comment-url<<" in (tmp_path / "github-output").read_text()
