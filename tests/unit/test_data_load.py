"""Bad data files become InputErrors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlgate.config import load_config
from mlgate.data import validate_data
from mlgate.errors import InputError

CONFIG = """\
version: 1
project: demo
data:
  sources:
    train:
      path: {path}
{extra}  expectations:
    columns:
      amount: {{type: float}}
"""


def _project(tmp_path: Path, path: str, extra: str = "") -> Path:
    config = tmp_path / "mlgate.yaml"
    config.write_text(CONFIG.format(path=path, extra=extra), encoding="utf-8")
    return config


def _error(config: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        validate_data(load_config(config))
    return caught.value


def test_missing_file_is_named_with_its_config_line(tmp_path: Path) -> None:
    error = _error(_project(tmp_path, "data/nope.csv"))
    assert "nope.csv" in error.message and "does not exist" in error.message
    assert error.line == 6  # the `path:` line of data.sources.train
    assert error.hint and "dvc" in error.hint


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_bytes(b"")
    error = _error(_project(tmp_path, "train.csv"))
    assert "train.csv" in error.message and "empty" in error.message


def test_header_only_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("id,amount\n", encoding="utf-8")
    error = _error(_project(tmp_path, "train.csv"))
    assert "train.csv" in error.message and "no rows" in error.message


def test_wrong_delimiter_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("id;amount\n1;2.5\n2;3.5\n", encoding="utf-8")
    error = _error(_project(tmp_path, "train.csv"))
    assert "train.csv" in error.message and ";-delimited" in error.message
    assert error.hint and "data.sources.train.delimiter" in error.hint


def test_configured_delimiter_reads_the_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("id;amount\n1;2.5\n2;3.5\n", encoding="utf-8")
    config = _project(tmp_path, "train.csv", extra="      delimiter: ';'\n")
    report = validate_data(load_config(config))
    assert report.passed, [o for o in report.expectations if not o.success]


def test_bad_parquet(tmp_path: Path) -> None:
    (tmp_path / "train.parquet").write_bytes(b"this is not parquet at all")
    error = _error(_project(tmp_path, "train.parquet"))
    assert "train.parquet" in error.message and "Parquet" in error.message


def test_parquet_is_read(tmp_path: Path) -> None:
    pd.DataFrame({"amount": [1.0, 2.0]}).to_parquet(tmp_path / "train.parquet")
    report = validate_data(load_config(_project(tmp_path, "train.parquet")))
    assert report.passed
    assert report.sources[0].format == "parquet" and report.sources[0].rows == 2


def test_unknown_source_argument(tmp_path: Path) -> None:
    pd.DataFrame({"amount": [1.0]}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(InputError, match="'prod'"):
        validate_data(load_config(_project(tmp_path, "train.csv")), sources=["prod"])
