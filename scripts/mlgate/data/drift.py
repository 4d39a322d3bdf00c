"""Drift of each feature between a reference and a current sample: PSI plus a KS or chi-square test."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from mlgate.config import DriftConfig

Status = Literal["ok", "warn", "fail"]
Kind = Literal["numeric", "categorical"]
# Share given to a bin that one sample leaves empty, so PSI stays finite (the usual convention).
EPSILON = 1e-4
# Features compared at once, at most (one thread each; the machine's CPUs bound it first).
MAX_THREADS = 8


@dataclass(frozen=True, kw_only=True)
class FeatureDrift:
    """One feature compared: PSI, the statistical test, its effect size, and the verdict."""

    feature: str
    kind: Kind
    psi: float
    test: Literal["ks", "chi2"]
    statistic: float
    pvalue: float
    effect: float  # KS statistic, or Cramer's V for chi-square
    status: Status
    key: tuple[str | int, ...]  # the mlgate.yaml key to annotate

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "kind": self.kind,
            "psi": self.psi,
            "test": self.test,
            "statistic": self.statistic,
            "pvalue": self.pvalue,
            "effect": self.effect,
            "status": self.status,
            "key": list(self.key),
        }


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two count vectors over the same bins."""
    ref = np.maximum(reference / max(reference.sum(), 1), EPSILON)
    cur = np.maximum(current / max(current.sum(), 1), EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _is_numeric(series: pd.Series) -> bool:
    dtype = series.dtype
    return bool(
        (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))
        or pd.api.types.is_datetime64_any_dtype(dtype)
    )


def _as_float(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        values = series.to_numpy(dtype="datetime64[ns]").astype("int64").astype("float64")
        values[series.isna().to_numpy()] = np.nan
        return values
    return series.to_numpy(dtype="float64", na_value=np.nan)


def numeric_drift(reference: pd.Series, current: pd.Series, bins: int) -> tuple[float, float, float]:
    """(PSI over quantile bins of the reference, KS statistic, KS p-value); nulls are their own bin.

    One sort of each side serves all three: the reference's quantile edges are read off its sorted values,
    each bin's count is the difference of two positions in a sorted array, and the KS statistic compares the
    two empirical CDFs at every value of either side (`ks_two_sample`, SciPy's asymptotic `ks_2samp` on
    sorted input)."""
    ref_all, cur_all = _as_float(reference), _as_float(current)
    ref_null, cur_null = np.isnan(ref_all), np.isnan(cur_all)
    ref, cur = np.sort(ref_all[~ref_null]), np.sort(cur_all[~cur_null])
    if ref.size == 0 or cur.size == 0:
        psi = _psi(np.array([ref_null.sum(), ref.size]), np.array([cur_null.sum(), cur.size]))
        return psi, 0.0, 1.0
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1))[1:-1])
    # Bins are [a, b): a value equal to an edge goes to the upper bin; a bin's count is the number of values
    # below its upper edge minus those below its lower edge.
    ref_counts, cur_counts = _bin_counts(ref, edges), _bin_counts(cur, edges)
    if ref_null.any() or cur_null.any():
        ref_counts = np.append(ref_counts, ref_null.sum())
        cur_counts = np.append(cur_counts, cur_null.sum())
    statistic, pvalue = ks_two_sample(ref, cur)
    return _psi(ref_counts, cur_counts), statistic, pvalue


def _bin_counts(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    below = np.searchsorted(ordered, edges, side="left")
    return np.diff(np.concatenate(([0], below, [ordered.size])))


def ks_two_sample(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """The two-sided two-sample KS statistic and its asymptotic p-value for two *sorted* samples: what
    `scipy.stats.ks_2samp(first, second, method="asymp")` returns, without sorting again. The empirical CDFs
    differ most at a value of one of the samples; queries in sorted order make each binary search short."""
    n1, n2 = first.size, second.size
    gaps = (
        np.abs(np.searchsorted(first, sample, side="right") / n1 - np.searchsorted(second, sample, side="right") / n2)
        for sample in (first, second)
    )
    statistic = float(max(float(gap.max()) for gap in gaps))
    many, few = max(n1, n2), min(n1, n2)
    effective = float(many) * float(few) / float(many + few)
    pvalue = float(np.clip(stats.kstwo.sf(statistic, np.round(effective)), 0.0, 1.0))
    return statistic, pvalue


def _category_counts(series: pd.Series) -> pd.Series:
    # Text keys so 1 and "1" (a column read as int in one file and str in the other) meet.
    counts = series.value_counts(dropna=False)
    counts.index = ["<null>" if pd.isna(v) else str(v) for v in counts.index]
    return counts.groupby(level=0).sum()


def categorical_drift(reference: pd.Series, current: pd.Series) -> tuple[float, float, float, float]:
    """(PSI over categories, chi-square statistic, p-value, Cramer's V); unseen categories count."""
    table = pd.concat([_category_counts(reference), _category_counts(current)], axis=1).fillna(0)
    counts = table.to_numpy(dtype="float64").T  # 2 x categories
    psi = _psi(counts[0], counts[1])
    if counts.shape[1] < 2:
        return psi, 0.0, 1.0, 0.0
    statistic, pvalue, _, _ = stats.chi2_contingency(counts, correction=False)
    cramers_v = float(np.sqrt(statistic / counts.sum()))  # min(rows, cols) - 1 == 1 for two samples
    return psi, float(statistic), float(pvalue), cramers_v


def _status(psi: float, pvalue: float, effect: float, config: DriftConfig, test: str) -> Status:
    threshold = config.ks if test == "ks" else config.chi2
    if psi >= config.psi.fail or (pvalue < threshold.pvalue and effect >= threshold.min_effect):
        return "fail"
    if psi >= config.psi.warn:
        return "warn"
    return "ok"


def compare(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig) -> list[FeatureDrift]:
    """Every feature of `config` (default: the columns both share, minus `exclude`) compared; the features in
    parallel threads (NumPy's sorts and searches release the GIL), the results in the features' order."""
    features: list[tuple[str, tuple[str | int, ...]]]
    if config.features is not None:
        features = [(name, ("data", "drift", "features", i)) for i, name in enumerate(config.features)]
    else:
        shared = [str(c) for c in reference.columns if c in current.columns]
        features = [(name, ("data", "drift")) for name in shared]
    chosen = [(name, key) for name, key in features if name not in config.exclude]

    def one(feature: tuple[str, tuple[str | int, ...]]) -> FeatureDrift:
        name, key = feature
        ref, cur = reference[name], current[name]
        if _is_numeric(ref) and _is_numeric(cur):
            psi, statistic, pvalue = numeric_drift(ref, cur, config.psi.bins)
            status = _status(psi, pvalue, statistic, config, "ks")
            return FeatureDrift(
                feature=name,
                kind="numeric",
                psi=psi,
                test="ks",
                statistic=statistic,
                pvalue=pvalue,
                effect=statistic,
                status=status,
                key=key,
            )
        psi, statistic, pvalue, effect = categorical_drift(ref, cur)
        status = _status(psi, pvalue, effect, config, "chi2")
        return FeatureDrift(
            feature=name,
            kind="categorical",
            psi=psi,
            test="chi2",
            statistic=statistic,
            pvalue=pvalue,
            effect=effect,
            status=status,
            key=key,
        )

    workers = min(len(chosen), os.cpu_count() or 1, MAX_THREADS)
    if workers <= 1:
        return [one(feature) for feature in chosen]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlgate-drift") as pool:
        return list(pool.map(one, chosen))
