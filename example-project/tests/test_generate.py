"""The synthetic data: deterministic, ~2% fraud, the stated relation, a drifted production batch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fraud.features import CATEGORIES, COLUMNS
from fraud.generate import OUTPUT_FILES, fraud_probability, load_params, main

PROJECT = Path(__file__).resolve().parents[1]
PARAMS = PROJECT / "params.yaml"


def _generate(out: Path) -> dict[str, bytes]:
    assert main(["--params", str(PARAMS), "--out", str(out)]) == 0
    return {name: (out / name).read_bytes() for name in OUTPUT_FILES}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _generate(tmp_path_factory.mktemp("first"))


@pytest.fixture(scope="module")
def frames(generated: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("read")
    result = {}
    for name, content in generated.items():
        (folder / name).write_bytes(content)
        result[name.removesuffix(".csv")] = pd.read_csv(folder / name)
    return result


def _psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index over quantile bins of the reference."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.clip(np.histogram(reference, edges)[0] / len(reference), 1e-6, None)
    cur = np.clip(np.histogram(current, edges)[0] / len(current), 1e-6, None)
    return float(((cur - ref) * np.log(cur / ref)).sum())


def test_two_runs_write_identical_bytes(generated: dict[str, bytes], tmp_path: Path) -> None:
    assert _generate(tmp_path) == generated


def test_bytes_match_dvc_lock(generated: dict[str, bytes]) -> None:
    lock = yaml.safe_load((PROJECT / "dvc.lock").read_text(encoding="utf-8"))
    recorded = {Path(out["path"]).name: out["md5"] for out in lock["stages"]["generate"]["outs"]}
    actual = {
        name: hashlib.md5(content, usedforsecurity=False).hexdigest() for name, content in generated.items()
    }
    assert actual == recorded, "dvc.lock is stale (run `dvc repro`) or numpy changed its random streams"


def test_columns_ids_and_nulls(frames: dict[str, pd.DataFrame]) -> None:
    ids: list[pd.Series] = []
    for name, frame in frames.items():
        assert tuple(frame.columns) == COLUMNS, name
        assert frame["transaction_id"].is_unique, name
        ids.append(frame["transaction_id"])
        nulls = frame.isna().sum()
        assert set(nulls[nulls > 0].index) <= {"device_type"}, name
        assert frame["device_type"].isna().mean() < 0.01, name
        for column, vocabulary in CATEGORIES.items():
            assert set(frame[column].dropna()) <= set(vocabulary), (name, column)
        assert frame["amount"].min() >= 0
        assert frame["hour"].between(0, 23).all()
        assert (frame["velocity_1h"] >= 0).all()
        assert (frame["transaction_count_7d"] >= frame["velocity_1h"]).all()
        assert set(frame["is_fraud"]) == {0, 1}
        assert pd.to_datetime(frame["event_timestamp"], format="ISO8601").is_monotonic_increasing
    every_id = pd.concat(ids)
    assert every_id.is_unique, "transaction ids overlap between files"
    assert len(frames["train"]) + len(frames["test"]) == load_params(PARAMS).n_rows


def test_test_set_is_the_latest_period(frames: dict[str, pd.DataFrame]) -> None:
    assert frames["train"]["event_timestamp"].max() <= frames["test"]["event_timestamp"].min()


@pytest.mark.parametrize("name", ["train", "test", "reference"])
def test_positive_rate_is_about_two_percent(frames: dict[str, pd.DataFrame], name: str) -> None:
    assert 0.01 <= frames[name]["is_fraud"].mean() <= 0.03


def test_fraud_rate_rises_with_amount(frames: dict[str, pd.DataFrame]) -> None:
    data = pd.concat([frames["train"], frames["test"]])
    rates = data.groupby(pd.qcut(data["amount"], 5), observed=True)["is_fraud"].mean()
    assert rates.is_monotonic_increasing and rates.iloc[-1] > 3 * rates.iloc[0], rates


def test_fraud_rate_rises_with_velocity(frames: dict[str, pd.DataFrame]) -> None:
    data = pd.concat([frames["train"], frames["test"]])
    rates = data.groupby(data["velocity_1h"].clip(upper=3))["is_fraud"].mean()
    assert rates.is_monotonic_increasing and rates.iloc[-1] > 2 * rates.iloc[0], rates


def test_labels_follow_the_stated_relation(frames: dict[str, pd.DataFrame]) -> None:
    relation = load_params(PARAMS).fraud
    for name in ("train", "test", "reference", "production"):
        frame = frames[name]
        expected = fraud_probability(frame, relation).mean()
        assert abs(frame["is_fraud"].mean() - expected) < 0.006, name


def test_production_is_drifted_and_reference_is_not(frames: dict[str, pd.DataFrame]) -> None:
    reference = frames["reference"]
    assert _psi(reference["amount"], frames["production"]["amount"]) > 0.25
    assert _psi(reference["amount"], frames["train"]["amount"]) < 0.1
    assert frames["production"]["amount"].median() > 2 * reference["amount"].median()
    production_mobile = (frames["production"]["device_type"] == "mobile").mean()
    assert production_mobile > (reference["device_type"] == "mobile").mean() + 0.2
