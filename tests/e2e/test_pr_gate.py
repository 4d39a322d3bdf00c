"""The example project's pull-request workflow under act: good data passes, each bad change fails."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.e2e.harness import ActResult, Workbench


def _assert_failed(result: ActResult, *needles: str) -> None:
    assert result.returncode != 0, f"the PR check passed but should have failed:\n{result.output[-4000:]}"
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in the act output:\n{result.output[-6000:]}"


def test_good_pull_request_passes(workbench: Workbench) -> None:
    project = workbench.new_project("good")
    result = workbench.act(project)
    assert result.returncode == 0, result.output[-8000:]
    assert "mlgate lint" in result.output
    assert "Job succeeded" in result.output
    assert "FAILED" not in result.output
    docs = list(result.artifacts.glob("data-docs/**/index.html"))
    assert docs, f"no Data Docs artifact uploaded under {result.artifacts}"


def test_lint_finding_fails_with_annotation(workbench: Workbench) -> None:
    project = workbench.new_project("lint")
    (project.path / "src" / "fraud" / "sloppy.py").write_text("import os\n\n\ndef f(x: int) -> str:\n    return x\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "add sloppy module")
    result = workbench.act(project)
    _assert_failed(result, "F401", "src/fraud/sloppy.py", "return-value")


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["merchant_category"])


def _nulls_above_mostly(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[: len(frame) // 10], "device_type"] = None
    return frame


def _out_of_range(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[:50], "hour"] = 31
    return frame


def _unknown_category(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[:40], "country"] = "ZZ"
    return frame


def _drifted(frame: pd.DataFrame) -> pd.DataFrame:
    frame["amount"] = frame["amount"] * 4.0
    return frame


@pytest.mark.parametrize(
    ("name", "change", "needles"),
    [
        ("missing-column", _missing_column, ["merchant_category", "exists"]),
        ("nulls", _nulls_above_mostly, ["device_type", "not_null"]),
        ("out-of-range", _out_of_range, ["hour", "between"]),
        ("unknown-category", _unknown_category, ["country", "in_set", "ZZ"]),
        ("drift", _drifted, ["DRIFT", "amount"]),
    ],
)
def test_bad_data_fails_naming_the_check(workbench: Workbench, name: str, change, needles: list[str]) -> None:  # type: ignore[no-untyped-def]
    project = workbench.new_project(name)
    project.change_data("train", change, f"data: {name}")
    result = workbench.act(project)
    _assert_failed(result, *needles)
