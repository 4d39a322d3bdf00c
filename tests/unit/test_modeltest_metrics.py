"""mlgate's NumPy metrics agree with scikit-learn's definitions, ties and edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
from mlgate.modeltest import metrics

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(2000) < 0.05).astype(int)
    # Rounded scores: many ties, which is where rank-based shortcuts usually go wrong.
    scores = np.round(np.clip(labels * 0.3 + rng.random(2000) * 0.7, 0, 1), 2)
    assert metrics.roc_auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.pr_auc(labels, scores) == pytest.approx(sk.average_precision_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.9])
def test_threshold_metrics_match_sklearn(threshold: float) -> None:
    rng = np.random.default_rng(7)
    labels = (rng.random(500) < 0.2).astype(int)
    scores = np.clip(labels * 0.4 + rng.random(500) * 0.6, 0, 1)
    predicted = (scores >= threshold).astype(int)
    assert metrics.f1(labels, scores, threshold) == pytest.approx(sk.f1_score(labels, predicted, zero_division=0))
    assert metrics.precision(labels, scores, threshold) == pytest.approx(
        sk.precision_score(labels, predicted, zero_division=0)
    )
    assert metrics.recall(labels, scores, threshold) == pytest.approx(sk.recall_score(labels, predicted))
    assert metrics.accuracy(labels, scores, threshold) == pytest.approx(sk.accuracy_score(labels, predicted))


def test_recall_at_precision() -> None:
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    assert metrics.recall_at_precision(labels, scores, 1.0) == pytest.approx(2 / 3)
    assert metrics.recall_at_precision(labels, scores, 0.75) == pytest.approx(1.0)
    assert metrics.recall_at_precision([0, 0, 1], [0.9, 0.8, 0.1], 0.9) == 0.0


def test_edge_cases() -> None:
    assert np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))
    assert metrics.f1([0, 0], [0.9, 0.1]) == 0.0
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        metrics.roc_auc([0, 1, 1], [0.1, 0.2])


@pytest.mark.parametrize(
    ("labels", "scores"),
    [
        (np.random.default_rng(11).integers(0, 2, 5000), np.random.default_rng(12).random(5000)),
        (np.random.default_rng(13).integers(0, 2, 3000), np.random.default_rng(14).integers(0, 7, 3000) / 6),  # ties
        (np.array([1, 1, 0]), np.array([0.5, 0.5, 0.5])),  # one score for all
        (np.array([0, 0, 0]), np.array([0.1, 0.7, 0.4])),  # no positives
        (np.array([1, 1]), np.array([0.2, 0.9])),  # no negatives
    ],
    ids=["continuous", "ties", "one-score", "no-positives", "no-negatives"],
)
def test_all_metrics_from_one_sort_are_the_functions_one_by_one(labels: np.ndarray, scores: np.ndarray) -> None:
    found = metrics.classification(labels, scores, 0.5, 0.6)
    expected = {name: getattr(metrics, name)(labels, scores, 0.5) for name in metrics.THRESHOLD_METRICS}
    expected |= {"roc_auc": metrics.roc_auc(labels, scores), "pr_auc": metrics.pr_auc(labels, scores)}
    expected["recall_at_precision"] = metrics.recall_at_precision(labels, scores, 0.6)
    assert set(found) == set(expected)
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, rel=1e-12, abs=1e-12, nan_ok=True), name
