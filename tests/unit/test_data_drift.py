"""Drift and leakage: same distributions pass, shifted ones fail, shared keys are counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlgate.config import DriftConfig, load_config
from mlgate.data import validate_data
from mlgate.data.drift import compare, ks_two_sample, numeric_drift
from mlgate.data.leakage import find_leakage
from mlgate.errors import InputError
from scipy import stats

N = 50_000


def _sample(seed: int, *, shift: float = 0.0, colors: tuple[str, ...] = ("red", "green", "blue")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.0 + shift, 1.0, N),
            "age": rng.integers(18, 90, N),
            "color": rng.choice(colors, N),
            "flag": rng.random(N) < 0.3,
        }
    )


def _by_feature(reference: pd.DataFrame, current: pd.DataFrame, **kwargs: object) -> dict[str, object]:
    config = DriftConfig.model_validate({"reference": "a", "current": "b", **kwargs})
    return {d.feature: d for d in compare(reference, current, config)}


def test_same_distribution_is_ok() -> None:
    results = _by_feature(_sample(1), _sample(2))
    assert {name: d.status for name, d in results.items()} == dict.fromkeys(  # type: ignore[attr-defined]
        ["amount", "age", "color", "flag"], "ok"
    )
    assert results["amount"].kind == "numeric" and results["color"].kind == "categorical"  # type: ignore[attr-defined]
    assert results["amount"].psi < 0.01  # type: ignore[attr-defined]


def test_shifted_numeric_fails() -> None:
    drift = _by_feature(_sample(1), _sample(2, shift=0.5))["amount"]
    assert drift.status == "fail"  # type: ignore[attr-defined]
    assert drift.psi >= 0.25 and drift.pvalue < 1e-10  # type: ignore[attr-defined]


def test_new_category_fails() -> None:
    current = _sample(2)
    current.loc[: N // 3, "color"] = "purple"
    drift = _by_feature(_sample(1), current)["color"]
    assert drift.status == "fail" and drift.test == "chi2"  # type: ignore[attr-defined]
    assert drift.effect > 0.3  # type: ignore[attr-defined]


def test_small_shift_warns_only() -> None:
    current = _sample(2, shift=0.1)
    drift = _by_feature(_sample(1), current, psi={"warn": 0.005, "fail": 0.5}, ks={"min_effect": 0.5})["amount"]
    assert drift.status == "warn"  # type: ignore[attr-defined]


def test_features_and_exclude() -> None:
    results = _by_feature(_sample(1), _sample(2), exclude=["flag", "age"])
    assert set(results) == {"amount", "color"}
    listed = _by_feature(_sample(1), _sample(2), features=["age"])
    assert listed["age"].key == ("data", "drift", "features", 0)  # type: ignore[attr-defined]


def test_leakage_counts_shared_keys() -> None:
    result = find_leakage("id", "train", pd.Series([1, 2, 3, 4]), "test", pd.Series([4, 3, 9]))
    assert not result.passed and result.overlapping == 2 and set(result.examples) == {"3", "4"}
    assert find_leakage("id", "train", pd.Series([1]), "test", pd.Series(["2"])).passed


def test_leakage_missing_key_column(tmp_path: Path) -> None:
    pd.DataFrame({"id": [1, 2]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"other": [3]}).to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "mlgate.yaml").write_text(
        "version: 1\nproject: p\ndata:\n  sources:\n    train: {path: train.csv}\n"
        "    test: {path: test.csv}\n  validate: [train]\n"
        "  leakage:\n    key: id\n    between: [train, test]\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError) as caught:
        validate_data(load_config(tmp_path / "mlgate.yaml"))
    assert "'test'" in caught.value.message and "test.csv" in caught.value.message
    assert "'id'" in caught.value.message and caught.value.line == 9


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (np.random.default_rng(1).normal(0, 1, 3000), np.random.default_rng(2).normal(0.1, 1, 2000)),
        (np.random.default_rng(3).integers(0, 20, 5000).astype(float), np.random.default_rng(4).integers(0, 21, 700)),
        (np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 2.0, 2.0, 3.0])),
    ],
    ids=["continuous", "ties", "tiny"],
)
def test_ks_on_sorted_samples_is_scipys(first: np.ndarray, second: np.ndarray) -> None:
    expected = stats.ks_2samp(first, second, method="asymp")
    found = ks_two_sample(np.sort(first), np.sort(second.astype(float)))
    assert found == pytest.approx((expected.statistic, expected.pvalue), rel=1e-12, abs=1e-15)


def test_numeric_drift_bins_as_quantile_bins_of_the_reference_with_nulls_a_bin_of_their_own() -> None:
    rng = np.random.default_rng(5)
    reference = pd.Series(np.append(rng.integers(0, 50, 4000).astype(float), [np.nan] * 40))
    current = pd.Series(np.append(rng.integers(5, 55, 3000).astype(float), [np.nan] * 90))
    psi, statistic, _ = numeric_drift(reference, current, bins=10)
    # The reference's computation, straight from the definitions: [a, b) bins between its deciles, then nulls.
    ref, cur = reference.dropna().to_numpy(), current.dropna().to_numpy()
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11))[1:-1])
    counts = [np.append(np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1), nulls)
              for x, nulls in ((ref, 40), (cur, 90))]  # fmt: skip
    shares = [np.maximum(c / c.sum(), 1e-4) for c in counts]
    assert psi == pytest.approx(float(np.sum((shares[1] - shares[0]) * np.log(shares[1] / shares[0]))), rel=1e-12)
    assert statistic == pytest.approx(stats.ks_2samp(ref, cur).statistic, rel=1e-12)
