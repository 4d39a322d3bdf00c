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
    """A logistic score of amount and velocity; `amount_weight=0` gives a model blind to the amount."""

    def __init__(self, amount_weight: float = AMOUNT, velocity_weight: float = VELOCITY) -> None:
        self.amount_weight = amount_weight
        self.velocity_weight = velocity_weight

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        logit = (
            INTERCEPT
            + self.amount_weight * model_input["amount"].to_numpy(dtype=float)
            + self.velocity_weight * model_input["velocity"].to_numpy(dtype=float)
        )
        return pd.DataFrame({"score": sigmoid(logit)})
