"""Tiny pyfunc models for the model-test gate's tests, logged with `code_paths=[this file]`.

They must be importable by name in the pytest subprocess that loads them, so they live in a
module of their own (MLflow puts this file on the loading process's path), not in a test file.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

# The true relation of the test data: P(label = 1) = sigmoid(INTERCEPT + AMOUNT * amount + VELOCITY * velocity).
INTERCEPT = -3.0
AMOUNT = 0.004
VELOCITY = 0.2


def sigmoid(x: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


class Logistic(mlflow.pyfunc.PythonModel):
    """A logistic score of amount and velocity; `amount_weight=0` gives a model blind to the amount.

    `output` is the shape of what predict returns: `frame` one column `score`; `columns` a DataFrame
    with a predicted label and both classes' probabilities; `small-batches` the same as `frame` but
    it raises on more than 100 rows (a model that breaks on the holdout).
    """

    def __init__(self, amount_weight: float = AMOUNT, velocity_weight: float = VELOCITY, output: str = "frame") -> None:
        self.amount_weight = amount_weight
        self.velocity_weight = velocity_weight
        self.output = output

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.output == "small-batches" and len(model_input) > 100:
            raise ValueError(f"batches above 100 rows are not supported (got {len(model_input)})")
        logit = (
            INTERCEPT
            + self.amount_weight * model_input["amount"].to_numpy(dtype=float)
            + self.velocity_weight * model_input["velocity"].to_numpy(dtype=float)
        )
        score = sigmoid(logit)
        if self.output == "columns":
            return pd.DataFrame({"decision": np.where(score >= 0.5, "fraud", "ok"), "legit": 1 - score, "fraud": score})
        return pd.DataFrame({"score": score})
