"""The churn model's own model tests, with mlgate's pytest fixtures (run by `mlgate test-model`).

    pytest mlgate.yaml tests/model --mlgate-candidate models:/<model_id>

Without a candidate (a plain `pytest tests`) they skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

Predict = Callable[[Any, pd.DataFrame], np.ndarray]


def test_scores_are_probabilities(candidate_model: Any, holdout: pd.DataFrame, predict: Predict) -> None:
    scores = predict(candidate_model, holdout.head(300))
    assert scores.shape == (300,)
    assert ((scores >= 0.0) & (scores <= 1.0)).all()


def test_an_unseen_region_still_scores(candidate_model: Any, holdout: pd.DataFrame, predict: Predict) -> None:
    # A new sales region must not crash the model (the encoder ignores unknown categories).
    rows = holdout.head(20).copy()
    rows["region"] = "central"
    assert np.isfinite(predict(candidate_model, rows)).all()


def test_new_customers_churn_more_than_old_ones(
    candidate_model: Any, holdout: pd.DataFrame, predict: Predict
) -> None:
    rows = holdout.head(500).copy()
    new = predict(candidate_model, rows.assign(tenure_months=1)).mean()
    old = predict(candidate_model, rows.assign(tenure_months=110)).mean()
    assert new > old
