"""`mlgate validate-data` end to end: exit codes, outputs, job summary and annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlgate.cli import main

CONFIG = """\
version: 1
project: demo
data:
  sources:
    train: {path: train.csv}
    prod: {path: prod.csv}
  validate: [train]
  expectations:
    columns:
      amount:
        min: 0
        max: 100
      color: {allowed: [red, green]}
  drift:
    reference: train
    current: prod
    features: [amount, color]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = np.random.default_rng(0)
    n = 2000
    for name, seed in (("train", 1), ("prod", 2)):
        rng = np.random.default_rng(seed)
        frame = pd.DataFrame({"amount": rng.uniform(0, 100, n), "color": rng.choice(["red", "green"], n)})
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "mlgate.yaml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # a step in Actions: annotations are workflow commands
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "output.txt"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    for name in ("CONFIG", "SOURCES", "DOCS_DIR", "DRIFT_CURRENT", "DVC_PULL"):
        monkeypatch.delenv(f"MLGATE_INPUT_{name}", raising=False)
    return tmp_path


def _outputs(project: Path) -> dict[str, str]:
    lines = (project / "output.txt").read_text(encoding="utf-8").splitlines()
    outputs = {}
    for index, line in enumerate(lines):
        if "<<ghadelimiter_" in line:
            outputs[line.split("<<")[0]] = lines[index + 1]
    return outputs


def test_passing_data(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-data"]) == 0
    outputs = _outputs(project)
    assert outputs["passed"] == "true" and outputs["failed-checks"] == "0"
    assert outputs["drifted-features"] == ""
    assert (project / "mlgate-data-docs" / "index.html").is_file()
    report = json.loads((project / outputs["report"]).read_text(encoding="utf-8"))
    assert report["passed"] is True
    summary = (project / "summary.md").read_text(encoding="utf-8")
    assert "✅ Data validation passed" in summary and "| amount | numeric |" in summary
    assert "::error" not in capsys.readouterr().out


def test_failing_data(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prod = pd.read_csv(project / "prod.csv")
    prod["amount"] = prod["amount"] + 60  # shifted: drift
    prod.to_csv(project / "prod.csv", index=False)
    train = pd.read_csv(project / "train.csv")
    train.loc[:9, "amount"] = 500.0  # out of range
    train.to_csv(project / "train.csv", index=False)

    assert main(["validate-data", "--docs-dir", "docs"]) == 1
    out = capsys.readouterr().out
    assert "FAILED train: amount between [0, 100]: unexpected 0.5% (10 rows), e.g. [500.0" in out
    assert "::error file=mlgate.yaml,line=12,title=data expectation between::" in out
    assert "DRIFT prod: amount psi=" in out
    assert "::error file=mlgate.yaml,line=17,title=data drift fail::drift of amount" in out  # features[0]
    assert "data validation failed: 1 expectation(s), 1 drifted feature(s)" in out
    outputs = _outputs(project)
    assert outputs["passed"] == "false" and outputs["failed-checks"] == "1"
    assert outputs["drifted-features"] == "amount" and outputs["docs-dir"] == "docs"
    summary = (project / "summary.md").read_text(encoding="utf-8")
    assert "❌ Data validation failed" in summary
    assert "| train | amount | between | between [0, 100] | unexpected 0.5% (10 rows)" in summary
    assert (project / "docs" / "index.html").is_file() and (project / "docs" / "report.json").is_file()


def test_drift_current_and_sources_from_action_inputs(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLGATE_INPUT_DRIFT_CURRENT", "train")
    monkeypatch.setenv("MLGATE_INPUT_SOURCES", "prod")
    assert main(["validate-data"]) == 0
    report = json.loads((project / "mlgate-data-docs" / "report.json").read_text(encoding="utf-8"))
    assert report["drift"]["current"] == "train"
    assert {o["source"] for o in report["expectations"]} == {"prod"}
    assert all(f["psi"] == 0.0 for f in report["drift"]["features"])


def test_input_error_exit_code(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "prod.csv").unlink()
    assert main(["validate-data"]) == 3
    assert "prod.csv" in capsys.readouterr().out


def test_config_error_exit_code(project: Path) -> None:
    (project / "mlgate.yaml").write_text(CONFIG.replace("min: 0", "minimum: 0"), encoding="utf-8")
    assert main(["validate-data"]) == 2


def test_dvc_pull_failure_is_a_tool_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "mlgate.yaml").write_text(CONFIG.replace("data:\n", "data:\n  dvc: true\n"), encoding="utf-8")
    assert main(["validate-data"]) == 4  # not a DVC repository
    assert "dvc pull" in capsys.readouterr().out
    assert main(["validate-data", "--no-dvc-pull"]) == 0
