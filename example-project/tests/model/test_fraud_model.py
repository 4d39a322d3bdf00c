"""The fraud model's own model tests, written with mlgate's pytest fixtures.

`mlgate test-model` runs them next to the checks declared in mlgate.yaml (model_tests.tests), with
the candidate the pull request trained and the production model (`@champion`):

    pytest mlgate.yaml tests/model --mlgate-candidate models:/<model_id>

Without a candidate (a plain `pytest tests`) they skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

Predict = Callable[[Any, pd.DataFrame], np.ndarray]


def test_scores_are_probabilities_one_per_row(candidate_model: Any, holdout: pd.DataFrame, predict: Predict) -> None:
    scores = predict(candidate_model, holdout.head(500))
    assert scores.shape == (500,)
    assert np.isfinite(scores).all()
    assert ((scores >= 0.0) & (scores <= 1.0)).all()


def test_predictions_are_deterministic(candidate_model: Any, holdout: pd.DataFrame, predict: Predict) -> None:
    rows = holdout.sample(200, random_state=1)
    np.testing.assert_array_equal(predict(candidate_model, rows), predict(candidate_model, rows))


def test_a_missing_device_type_still_scores(candidate_model: Any, holdout: pd.DataFrame, predict: Predict) -> None:
    # About 0.2% of production traffic has no device type (mlgate.yaml: device_type mostly 0.99).
    rows = holdout.head(50).copy()
    rows["device_type"] = None
    assert np.isfinite(predict(candidate_model, rows)).all()


def test_the_riskiest_profile_is_flagged(candidate_model: Any, holdout: pd.DataFrame, predict: Predict) -> None:
    # Every known fraud factor at once: a large night-time purchase, a burst of transactions, a new account.
    rows = holdout.head(20).copy()
    rows[["amount", "hour", "velocity_1h", "account_age_days"]] = [5000.0, 3, 8, 5]
    assert (predict(candidate_model, rows) >= candidate_model.threshold).all()


def test_large_amounts_are_caught_as_well_as_by_the_champion(
    candidate_model: Any, champion_model: Any, holdout: pd.DataFrame, holdout_labels: np.ndarray, predict: Predict
) -> None:
    # Large transactions carry most of the money at risk: recall there must not fall behind production.
    large = (holdout["amount"] > 500).to_numpy() & (holdout_labels == 1)
    assert large.sum() >= 10, "too few large frauds in the holdout to compare"
    rows = holdout[large]
    candidate_recall = (predict(candidate_model, rows) >= candidate_model.threshold).mean()
    champion_recall = (predict(champion_model, rows) >= champion_model.threshold).mean()
    assert candidate_recall >= champion_recall - 0.05


def test_a_shuffled_amount_changes_scores(
    candidate_model: Any, holdout: pd.DataFrame, predict: Predict, perturb: Callable[..., pd.DataFrame]
) -> None:
    # The amount is the strongest single factor; a model that ignores it is broken.
    rows = holdout.head(1000)
    change = np.abs(predict(candidate_model, perturb(rows, "amount", shuffle=True)) - predict(candidate_model, rows))
    assert float(np.median(change)) > 1e-3
