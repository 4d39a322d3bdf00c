"""The example project's pull-request workflow under act: each bad change fails, naming its check.

The good pull request (every gate passes, training with lineage) is the first run of
tests/e2e/test_model_gate.py, which also tests its model against the champion and compresses it.
"""

from __future__ import annotations

import pandas as pd

from tests.e2e.harness import ActResult, Workbench


def _assert_failed(result: ActResult, *needles: str) -> None:
    assert result.returncode != 0, f"the PR check passed but should have failed:\n{result.output[-4000:]}"
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in the act output:\n{result.output[-6000:]}"


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["merchant_category"])


def _bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Three bad changes to distinct rows of one file: each expectation must fail on its own."""
    frame.loc[frame.index[: len(frame) // 10], "device_type"] = None  # above the tolerated 1% of nulls
    frame.loc[frame.index[-50:], "hour"] = 31
    frame.loc[frame.index[-100:-60], "country"] = "ZZ"
    return frame


def test_lint_finding_and_bad_data_fail_each_naming_the_check(workbench: Workbench) -> None:
    """One PR with a lint finding and four kinds of bad data: every gate that must fail names its check.

    One act run instead of one per case (lint and validate-data are independent jobs, each expectation
    a check of its own), which keeps the suite inside its time budget.
    """
    project = workbench.new_project("bad-changes")
    (project.path / "src" / "fraud" / "sloppy.py").write_text("import os\n\n\ndef f(x: int) -> str:\n    return x\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "add sloppy module")
    project.change_data("test", _missing_column, "data: test without merchant_category")
    project.change_data("train", _bad_rows, "data: nulls, out-of-range hours, unknown country")
    result = workbench.act(project)
    _assert_failed(
        result,
        # lint: ruff's unused import and mypy's wrong return type, at their file
        "F401", "src/fraud/sloppy.py", "return-value",
        # validate-data: each failed expectation names its column and kind
        "merchant_category", "exists",
        "device_type", "not_null",
        "hour", "between",
        "country", "in_set", "ZZ",
    )  # fmt: skip


def _drifted(frame: pd.DataFrame) -> pd.DataFrame:
    frame["amount"] = frame["amount"] * 4.0
    return frame


def test_drifted_data_fails_naming_the_feature(workbench: Workbench) -> None:
    project = workbench.new_project("drift")
    project.change_data("train", _drifted, "data: amounts from the new card scheme")
    result = workbench.act(project)
    _assert_failed(result, "DRIFT", "amount")
