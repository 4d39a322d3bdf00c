"""Classification metrics of the model-test gate, in NumPy only (the gate must not need scikit-learn).

Definitions follow scikit-learn's, so a project's own numbers and mlgate's agree: ROC AUC with
ties counted half, PR AUC as average precision (step-wise, no interpolation), and the threshold
metrics with 0/0 taken as 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def _validate(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[Array, Array]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y, s


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half."""
    y, s = _validate(labels, scores)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(y.size, dtype=np.float64)
    sorted_scores = s[order]
    # Average ranks over ties (1-based), the Mann-Whitney U statistic.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [y.size]))
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def _curve(y: Array, s: Array) -> tuple[Array, Array, Array]:
    """Cumulative true and false positives at each distinct threshold, highest score first."""
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    distinct = np.flatnonzero(np.diff(s_sorted))
    last = np.concatenate((distinct, [y.size - 1]))
    true_pos = np.cumsum(y_sorted)[last]
    false_pos = (last + 1) - true_pos
    return true_pos, false_pos, s_sorted[last]


def _precision_recall(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[Array, Array] | None:
    """Precision and recall at each distinct threshold, highest score first; None without positives."""
    y, s = _validate(labels, scores)
    positives = y.sum()
    if positives == 0:
        return None
    true_pos, false_pos, _ = _curve(y, s)
    return true_pos / (true_pos + false_pos), true_pos / positives


def pr_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision: sum over thresholds of (recall step) x precision."""
    curve = _precision_recall(labels, scores)
    if curve is None:
        return float("nan")
    precision, recall = curve
    steps = np.diff(np.concatenate(([0.0], recall)))
    return float(np.sum(steps * precision))


def recall_at_precision(labels: npt.ArrayLike, scores: npt.ArrayLike, min_precision: float) -> float:
    """The highest recall of any threshold whose precision is at least `min_precision` (0 if none)."""
    curve = _precision_recall(labels, scores)
    if curve is None:
        return float("nan")
    precision, recall = curve
    eligible = recall[precision >= min_precision]
    return float(eligible.max()) if eligible.size else 0.0


def _confusion(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> tuple[float, float, float, float]:
    y, s = _validate(labels, scores)
    predicted = s >= threshold
    tp = float(np.sum(predicted & (y == 1)))
    fp = float(np.sum(predicted & (y == 0)))
    fn = float(np.sum(~predicted & (y == 1)))
    tn = float(np.sum(~predicted & (y == 0)))
    return tp, fp, fn, tn


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def precision(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float = 0.5) -> float:
    tp, fp, _, _ = _confusion(labels, scores, threshold)
    return _ratio(tp, tp + fp)


def recall(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float = 0.5) -> float:
    tp, _, fn, _ = _confusion(labels, scores, threshold)
    return _ratio(tp, tp + fn)


def f1(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float = 0.5) -> float:
    tp, fp, fn, _ = _confusion(labels, scores, threshold)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def accuracy(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float = 0.5) -> float:
    tp, fp, fn, tn = _confusion(labels, scores, threshold)
    return _ratio(tp + tn, tp + fp + fn + tn)


def classification(
    labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float, at_precision: float
) -> dict[str, float]:
    """Every metric above at once, from one check of the inputs and one sort of the scores: the curve of
    true and false positives at each distinct score (highest first) gives ROC AUC (the trapezoids under the
    ROC curve: ties counted half, as `roc_auc`), average precision and the recall at a precision; the
    threshold metrics come from one confusion matrix. The same values as the functions one by one."""
    y, s = _validate(labels, scores)
    predicted = s >= threshold
    tp = float(np.count_nonzero(predicted & (y == 1)))
    fp = float(np.count_nonzero(predicted & (y == 0)))
    positives = float(y.sum())
    fn, tn = positives - tp, (y.size - positives) - fp
    values = {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    negatives = y.size - positives
    if positives == 0:
        nan = float("nan")
        return values | {"roc_auc": nan, "pr_auc": nan, "recall_at_precision": nan}
    true_pos, false_pos, _ = _curve(y, s)
    precision_curve, recall_curve = true_pos / (true_pos + false_pos), true_pos / positives
    eligible = recall_curve[precision_curve >= at_precision]
    values["pr_auc"] = float(np.sum(np.diff(np.concatenate(([0.0], recall_curve))) * precision_curve))
    values["recall_at_precision"] = float(eligible.max()) if eligible.size else 0.0
    if negatives == 0:
        values["roc_auc"] = float("nan")
    else:
        tpr = np.concatenate(([0.0], true_pos / positives))
        fpr = np.concatenate(([0.0], false_pos / negatives))
        values["roc_auc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return values


THRESHOLD_METRICS: dict[str, Callable[[npt.ArrayLike, npt.ArrayLike, float], float]] = {
    "accuracy": accuracy,
    "precision": precision,
    "recall": recall,
    "f1": f1,
}
RANKING_METRICS: dict[str, Callable[[npt.ArrayLike, npt.ArrayLike], float]] = {"roc_auc": roc_auc, "pr_auc": pr_auc}
