"""Each declared expectation fails on the data that breaks it, with the observed value and its YAML line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlgate.config import load_config
from mlgate.data import DataReport, ExpectationOutcome, validate_data

CONFIG = """\
version: 1
project: demo
data:
  sources:
    train: {path: train.csv}
  expectations:
    row_count:
      min: 5
    columns:
      id:
        type: int
        unique: true
      amount:
        type: float
        min: 0
        max: 100
      score:
        mostly: 0.8
      color:
        type: str
        allowed: [red, green]
"""
LINES = {
    "row_count": 7,
    "id.type": 11,
    "id.unique": 12,
    "amount.type": 14,
    "amount.min": 15,
    "amount.max": 16,
}


def _good() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.arange(10),
            "amount": np.linspace(0.5, 99.5, 10),
            "score": np.linspace(0, 1, 10),
            "color": ["red", "green"] * 5,
        }
    )


def _run(tmp_path: Path, frame: pd.DataFrame, config: str = CONFIG) -> tuple[DataReport, object]:
    frame.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "mlgate.yaml").write_text(config, encoding="utf-8")
    loaded = load_config(tmp_path / "mlgate.yaml")
    return validate_data(loaded), loaded


def _only_failure(report: DataReport) -> ExpectationOutcome:
    failed = report.failed_expectations
    assert len(failed) == 1, failed
    return failed[0]


def test_good_data_passes(tmp_path: Path) -> None:
    report, _ = _run(tmp_path, _good())
    assert report.passed
    checks = {(o.column, o.check) for o in report.expectations}
    assert {("id", "unique"), ("amount", "between"), ("color", "in_set"), (None, "row_count")} <= checks


def test_out_of_range_points_at_max(tmp_path: Path) -> None:
    frame = _good()
    frame.loc[3, "amount"] = 250.0
    report, config = _run(tmp_path, frame)
    outcome = _only_failure(report)
    assert (outcome.column, outcome.check) == ("amount", "between")
    assert "unexpected 10% (1 rows)" in outcome.observed and "250" in outcome.observed
    assert config.line_of(*outcome.key) == LINES["amount.max"]  # type: ignore[attr-defined]


def test_below_min_points_at_min(tmp_path: Path) -> None:
    frame = _good()
    frame.loc[3, "amount"] = -5.0
    report, config = _run(tmp_path, frame)
    outcome = _only_failure(report)
    assert "-5.0" in outcome.observed
    assert config.line_of(*outcome.key) == LINES["amount.min"]  # type: ignore[attr-defined]


def test_nulls_above_mostly_fail_and_below_pass(tmp_path: Path) -> None:
    frame = _good()
    frame.loc[:2, "score"] = np.nan  # 30% null, mostly 0.8 allows 20%
    report, config = _run(tmp_path, frame)
    outcome = _only_failure(report)
    assert (outcome.column, outcome.check) == ("score", "not_null")
    assert outcome.observed.startswith("null 30% (3 rows)")
    assert config.line_of(*outcome.key) == 17  # type: ignore[attr-defined]  # `score:` (not_null is a default)

    frame = _good()
    frame.loc[:1, "score"] = np.nan  # 20%: within mostly
    report, _ = _run(tmp_path, frame)
    assert report.passed


def test_unknown_category(tmp_path: Path) -> None:
    frame = _good()
    frame.loc[4, "color"] = "blue"
    report, config = _run(tmp_path, frame)
    outcome = _only_failure(report)
    assert outcome.check == "in_set" and "'blue'" in outcome.observed
    assert config.line_of(*outcome.key) == 21  # type: ignore[attr-defined]


def test_wrong_type_is_a_failed_expectation_not_a_crash(tmp_path: Path) -> None:
    frame = _good()
    frame["amount"] = ["cheap", "dear"] * 5
    report, config = _run(tmp_path, frame)
    failed = {o.check: o for o in report.failed_expectations if o.column == "amount"}
    assert failed["type"].observed == "dtype str"
    assert config.line_of(*failed["type"].key) == LINES["amount.type"]  # type: ignore[attr-defined]
    assert "could not evaluate" in failed["between"].observed


def test_int_column_with_nulls_is_still_int(tmp_path: Path) -> None:
    frame = _good().astype({"id": "float64"})
    config = CONFIG.replace("        unique: true\n", "        unique: true\n        not_null: false\n")
    frame.loc[2, "id"] = np.nan
    report, _ = _run(tmp_path, frame, config)
    assert report.passed, report.failed_expectations
    frame.loc[3, "id"] = 3.5
    report, _ = _run(tmp_path, frame, config)
    assert [o.check for o in report.failed_expectations] == ["type"]


def test_duplicate_in_unique_column(tmp_path: Path) -> None:
    frame = _good()
    frame.loc[5, "id"] = 4
    report, config = _run(tmp_path, frame)
    outcome = _only_failure(report)
    assert outcome.check == "unique" and "(2 rows)" in outcome.observed and "4" in outcome.observed
    assert config.line_of(*outcome.key) == LINES["id.unique"]  # type: ignore[attr-defined]


def test_row_count(tmp_path: Path) -> None:
    report, config = _run(tmp_path, _good().head(3))
    outcome = _only_failure(report)
    assert outcome.check == "row_count" and outcome.observed == "3 rows"
    assert config.line_of(*outcome.key) == LINES["row_count"]  # type: ignore[attr-defined]


def test_missing_column_skips_its_other_checks(tmp_path: Path) -> None:
    report, config = _run(tmp_path, _good().drop(columns=["color"]))
    outcome = _only_failure(report)
    assert (outcome.column, outcome.check) == ("color", "exists")
    assert "column missing" in outcome.observed
    assert config.line_of(*outcome.key) == 19  # type: ignore[attr-defined]
    assert not [o for o in report.expectations if o.column == "color" and o.check != "exists"]


@pytest.mark.parametrize("extra", ["extra"])
def test_exact_columns(tmp_path: Path, extra: str) -> None:
    frame = _good()
    frame[extra] = 1
    config = CONFIG.replace("      min: 5\n", "      min: 5\n    exact_columns: true\n")
    report, _ = _run(tmp_path, frame, config)
    outcome = _only_failure(report)
    assert outcome.check == "exact_columns" and "unexpected columns extra" in outcome.observed


def test_data_docs_are_built(tmp_path: Path) -> None:
    _good().to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "mlgate.yaml").write_text(CONFIG, encoding="utf-8")
    report = validate_data(load_config(tmp_path / "mlgate.yaml"), docs_dir=tmp_path / "docs")
    assert report.docs_index == tmp_path / "docs" / "index.html"
    assert report.docs_index.is_file()
    assert "mlgate-train" in report.docs_index.read_text(encoding="utf-8")
