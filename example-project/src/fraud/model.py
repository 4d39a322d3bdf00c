"""The fraud model: a preprocessor, a small MLP, and the MLflow pyfunc that serves both.

``FraudModel.predict`` takes a pandas DataFrame with the columns of `fraud.features.FEATURES`
(others are ignored) and returns a one-column DataFrame ``fraud_probability`` (float64 in
[0, 1], one row per input row, same index). The decision threshold chosen at training time
travels with the model (``FraudModel.threshold``, the MLmodel metadata and a model tag); the
probabilities themselves do not depend on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from fraud.features import CATEGORICAL_FEATURES, CATEGORIES, FEATURES, LABEL, NUMERIC_FEATURES

FloatArray = npt.NDArray[np.float32]

LOG_FEATURES: tuple[str, ...] = ("amount", "avg_amount_30d", "account_age_days")
"""Heavy-tailed columns (money, account age): log1p before standardising (negatives clip to 0)."""

OUTPUT_COLUMN = "fraud_probability"


def check_features(frame: pd.DataFrame) -> None:
    """Raise a ValueError naming every feature column that `frame` lacks."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame with the columns {list(FEATURES)}, got {type(frame)}")
    missing = [column for column in FEATURES if column not in frame.columns]
    if missing:
        raise ValueError(f"missing feature column(s) {missing}; the model needs the columns {list(FEATURES)}")


@dataclass(frozen=True)
class Preprocessor:
    """Numeric scaling and one-hot encoding fitted on the training frame.

    Numeric features: log1p of `LOG_FEATURES`, nulls filled with the training median,
    standardised with the training mean and standard deviation. Categorical features: one-hot
    over the fixed vocabulary of `fraud.features.CATEGORIES`; a null or unknown value encodes as
    all zeros. Only plain lists, dicts and floats are held, so the pickle is a few hundred bytes.
    """

    numeric: list[str]
    log_columns: list[str]
    medians: dict[str, float]
    means: dict[str, float]
    stds: dict[str, float]
    categories: dict[str, list[str]]

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> Preprocessor:
        check_features(frame)
        numeric = list(NUMERIC_FEATURES)
        log_columns = [column for column in LOG_FEATURES if column in numeric]
        raw = {column: _numeric_column(frame, column, column in log_columns) for column in numeric}
        medians: dict[str, float] = {}
        means: dict[str, float] = {}
        stds: dict[str, float] = {}
        for column, values in raw.items():
            finite = values[~np.isnan(values)]
            median = float(np.median(finite)) if finite.size else 0.0
            filled = np.where(np.isnan(values), median, values)
            std = float(filled.std()) if filled.size else 1.0
            medians[column] = median
            means[column] = float(filled.mean()) if filled.size else 0.0
            stds[column] = std if std > 1e-12 else 1.0
        categories = {column: list(CATEGORIES[column]) for column in CATEGORICAL_FEATURES}
        return cls(numeric, log_columns, medians, means, stds, categories)

    @property
    def n_outputs(self) -> int:
        return len(self.numeric) + sum(len(vocabulary) for vocabulary in self.categories.values())

    @property
    def output_names(self) -> list[str]:
        names = list(self.numeric)
        for column, vocabulary in self.categories.items():
            names.extend(f"{column}={value}" for value in vocabulary)
        return names

    def transform(self, frame: pd.DataFrame) -> FloatArray:
        """The model matrix of `frame` (float32, one row per row, `n_outputs` columns)."""
        check_features(frame)
        blocks: list[npt.NDArray[np.float64]] = []
        for column in self.numeric:
            values = _numeric_column(frame, column, column in self.log_columns)
            values = np.where(np.isnan(values), self.medians[column], values)
            blocks.append(((values - self.means[column]) / self.stds[column])[:, None])
        for column, vocabulary in self.categories.items():
            text = frame[column]
            one_hot = np.stack([text.isin([value]).to_numpy() for value in vocabulary], axis=1)
            blocks.append(one_hot.astype(np.float64))
        matrix: FloatArray = np.concatenate(blocks, axis=1).astype(np.float32)
        return matrix


def _numeric_column(frame: pd.DataFrame, column: str, log: bool) -> npt.NDArray[np.float64]:
    try:
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as error:
        raise ValueError(f"feature column {column!r} must be numeric: {error}") from error
    if log:
        values = np.log1p(np.clip(values, 0.0, None))
    return values


class FraudMLP(nn.Module):
    """Linear -> ReLU -> Dropout per hidden layer, then one logit per row."""

    def __init__(self, n_inputs: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(x).squeeze(-1)
        return logits


class FraudModel(PythonModel):
    """The MLflow pyfunc: preprocessor + MLP weights (CPU) + architecture + decision threshold.

    `logit_offset` is added to the network's logit before the sigmoid. Training with a positive
    class weight w multiplies the odds the network learns by w; an offset of -log(w) undoes it,
    so `predict` returns calibrated probabilities whatever weight was trained with.
    """

    def __init__(
        self,
        preprocessor: Preprocessor,
        state_dict: Mapping[str, torch.Tensor],
        hidden: Sequence[int],
        dropout: float,
        threshold: float,
        logit_offset: float = 0.0,
    ) -> None:
        self.preprocessor = preprocessor
        self.state_dict = {name: tensor.detach().to("cpu").clone() for name, tensor in state_dict.items()}
        self.hidden = [int(size) for size in hidden]
        self.dropout = float(dropout)
        self.threshold = float(threshold)
        self.logit_offset = float(logit_offset)
        self._network: FraudMLP | None = None

    @staticmethod
    def pos_weight_offset(pos_weight: float) -> float:
        return -math.log(pos_weight)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_network"] = None  # rebuilt from state_dict on load
        return state

    def network(self) -> FraudMLP:
        if self._network is None:
            network = FraudMLP(self.preprocessor.n_outputs, self.hidden, self.dropout)
            network.load_state_dict(self.state_dict)
            network.eval()
            self._network = network
        return self._network

    def load_context(self, context: Any) -> None:
        self.network()

    def predict_proba(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Fraud probabilities of the rows of `frame` (float64, shape (n,))."""
        features = torch.from_numpy(self.preprocessor.transform(frame))
        with torch.inference_mode():
            logits = self.network()(features).double() + self.logit_offset
            probabilities: npt.NDArray[np.float64] = torch.sigmoid(logits).numpy()
        return probabilities

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """A DataFrame with one float64 column `fraud_probability`, indexed like `model_input`."""
        return pd.DataFrame({OUTPUT_COLUMN: self.predict_proba(model_input)}, index=model_input.index)

    def mlgate_compress(self) -> dict[str, Any]:
        """mlgate's compress contract (mlgate's docs/compress.md): the network, its input and output, and
        for pruning and distillation our training data, loss and student."""
        pos_weight = torch.tensor(math.exp(-self.logit_offset))  # the class weight the offset undoes
        return {
            "network": self.network(),
            "features": self.preprocessor.transform,
            "outputs": functools.partial(probability_frame, logit_offset=self.logit_offset),
            "train_batches": functools.partial(training_batches, self.preprocessor),
            "loss": nn.BCEWithLogitsLoss(pos_weight=pos_weight),
            "student": functools.partial(FraudMLP, self.preprocessor.n_outputs, dropout=self.dropout),
        }


def probability_frame(
    logits: npt.NDArray[np.float32], frame: pd.DataFrame, logit_offset: float
) -> pd.DataFrame:
    """What `FraudModel.predict` returns, from the network's logits (the compressed variants' output)."""
    shifted = np.asarray(logits, dtype=np.float64).reshape(-1) + logit_offset
    return pd.DataFrame({OUTPUT_COLUMN: 1.0 / (1.0 + np.exp(-shifted))}, index=frame.index)


def training_batches(
    preprocessor: Preprocessor, path: str = "data/train.csv", batch_size: int = 256
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch of (features, float label) batches of the training data, for mlgate's fine-tunes."""
    frame = pd.read_csv(path)
    features = torch.from_numpy(preprocessor.transform(frame))
    labels = torch.tensor(frame[LABEL].to_numpy(), dtype=torch.float32)
    order = torch.randperm(len(frame), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(frame), batch_size):
        rows = order[start : start + batch_size]
        yield features[rows], labels[rows]
