"""Tiny models for the compress gate's tests and benchmark, logged with `code_paths=[this file]`.

The worker and the model-test pytest run load them in processes of their own, so the classes live in a
module importable by name (MLflow puts this file on the loading process's path), not in a test file.

- `MLPModel`: a PythonModel with mlgate's compress contract over a small MLP on the numeric columns
  (`features` -> float32 matrix, the network's logits -> a DataFrame with a `score` column).
- `CNNModel`: the same contract over a small CNN on 64 pixel columns p0..p63 seen as a 1x8x8 image, so
  `auto` quantization picks static QDQ with a calibration set.
- `BesselModel`: a network using torch.special.bessel_j0, which neither ONNX exporter translates.
- `NoContract`: a scorer without `mlgate_compress`.
- `fit_sklearn`: scikit-learn pipelines (logistic regression, gradient boosting, and one with a custom
  step skl2onnx has no converter for) on the numeric and categorical columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn

NUMERIC = ["f0", "f1", "f2", "f3", "f4", "f5"]
CATEGORICAL = "country"
COUNTRIES = ["US", "GB", "DE", "FR"]
# The true relation of the tabular data: P(label = 1) = sigmoid(INTERCEPT + x @ WEIGHTS + COUNTRY_EFFECT[country]);
# f5 plays no part.
WEIGHTS = np.array([1.6, -1.2, 0.9, 0.6, -0.4, 0.0])
INTERCEPT = -1.0
COUNTRY_EFFECT = {"US": 0.0, "GB": 0.3, "DE": -0.3, "FR": 0.6}
PIXELS = [f"p{i}" for i in range(64)]
LABEL = "label"
OUTPUT = "score"


def sigmoid(x: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# --- data ------------------------------------------------------------------------------------------------


def tabular_frame(rows: int, seed: int) -> pd.DataFrame:
    """Numeric f0..f5 (standard normal), a country, and a label drawn from the logistic relation, seeded."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, len(NUMERIC)))
    country = rng.choice(COUNTRIES, rows)
    logit = INTERCEPT + numeric @ WEIGHTS + np.vectorize(COUNTRY_EFFECT.get)(country)
    label = (rng.random(rows) < sigmoid(logit)).astype(int)
    frame = pd.DataFrame(numeric, columns=NUMERIC)
    frame[CATEGORICAL] = country
    frame[LABEL] = label
    return frame


def image_frame(rows: int, seed: int) -> pd.DataFrame:
    """8x8 noisy images, half of them with a bright vertical bar somewhere; the label says whether one is there
    (flipped for 5% of the rows, so the relation is not perfect), seeded."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.6, size=(rows, 8, 8))
    has_bar = rng.random(rows) < 0.5
    columns = rng.integers(0, 8, rows)
    starts = rng.integers(0, 4, rows)
    for row in np.flatnonzero(has_bar):
        images[row, starts[row] : starts[row] + 5, columns[row]] += 1.5
    label = np.where(rng.random(rows) < 0.05, ~has_bar, has_bar).astype(int)
    frame = pd.DataFrame(images.reshape(rows, 64).astype(np.float32), columns=PIXELS)
    frame[LABEL] = label
    return frame


def matrix_of(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The float32 feature matrix of `columns` (the preprocessing of the torch models)."""
    return frame[list(columns)].to_numpy(dtype=np.float32)


def image_batch(frame: pd.DataFrame) -> np.ndarray:
    return matrix_of(frame, PIXELS).reshape(-1, 1, 8, 8)


def score_frame(logits: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
    """What the torch models' predict returns, from the network's logits (the variants' `outputs`)."""
    return pd.DataFrame({OUTPUT: sigmoid(np.asarray(logits).reshape(-1))}, index=frame.index)


# --- networks --------------------------------------------------------------------------------------------


class MLPNet(nn.Module):
    def __init__(self, n_inputs: int, hidden: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(x).squeeze(-1)
        return logits


class CNNNet(nn.Module):
    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.body(x).squeeze(-1)
        return logits


class BesselNet(nn.Module):
    """Linear, then the Bessel function J0 (no ONNX translation in either exporter), then Linear."""

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.first = nn.Linear(n_inputs, 8)
        self.last = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.last(torch.special.bessel_j0(self.first(x))).squeeze(-1)
        return logits


def train_network(network: nn.Module, inputs: np.ndarray, labels: np.ndarray, epochs: int, lr: float) -> nn.Module:
    """A few epochs of Adam on binary cross-entropy, seeded; the network comes back in eval mode."""
    torch.manual_seed(0)
    features = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    targets = torch.from_numpy(labels.astype(np.float32))
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    loss = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(0)
    network.train()
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(features), 128):
            rows = order[start : start + 128]
            optimizer.zero_grad()
            loss(network(features[rows]), targets[rows]).backward()
            optimizer.step()
    return network.eval()


# --- pyfunc models ---------------------------------------------------------------------------------------


class TorchScorer(mlflow.pyfunc.PythonModel):
    """A torch network behind a pyfunc: `columns` -> float32 matrix (1x8x8 images for the CNN) -> network ->
    sigmoid -> a DataFrame with one column `score`. Holds the network's architecture and weights, not the module."""

    def __init__(
        self, kind: str, columns: Sequence[str], state_dict: dict[str, torch.Tensor], **arguments: Any
    ) -> None:
        self.kind = kind
        self.columns = list(columns)
        self.arguments = arguments
        self.state_dict = {name: tensor.detach().clone() for name, tensor in state_dict.items()}
        self._network: nn.Module | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_network"] = None
        return state

    def network(self) -> nn.Module:
        if self._network is None:
            network = NETWORKS[self.kind](**self.arguments)
            network.load_state_dict(self.state_dict)
            self._network = network.eval()
        return self._network

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        matrix = matrix_of(frame, self.columns)
        return matrix.reshape(-1, 1, 8, 8) if self.kind == "cnn" else matrix

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        with torch.inference_mode():
            logits = self.network()(torch.from_numpy(self.features(model_input))).numpy()
        return score_frame(logits, model_input)


class MLPModel(TorchScorer):
    def mlgate_compress(self) -> dict[str, Any]:
        """mlgate's compress contract: the network, its preprocessing and what predict makes of its output."""
        return {"network": self.network(), "features": self.features, "outputs": score_frame}


class CNNModel(MLPModel):
    pass


class BesselModel(MLPModel):
    pass


class NoContract(TorchScorer):
    """The same scorer, without mlgate_compress."""


NETWORKS: dict[str, Any] = {"mlp": MLPNet, "cnn": CNNNet, "bessel": BesselNet}


def train_mlp(frame: pd.DataFrame, epochs: int = 8, hidden: Sequence[int] = (64, 32)) -> MLPModel:
    network = MLPNet(len(NUMERIC), hidden)
    network = train_network(network, matrix_of(frame, NUMERIC), frame[LABEL].to_numpy(), epochs, 3e-3)
    return MLPModel("mlp", NUMERIC, network.state_dict(), n_inputs=len(NUMERIC), hidden=tuple(hidden))


def train_cnn(frame: pd.DataFrame, epochs: int = 6) -> CNNModel:
    network = train_network(CNNNet(), image_batch(frame), frame[LABEL].to_numpy(), epochs, 1e-2)
    return CNNModel("cnn", PIXELS, network.state_dict())


def bessel_model() -> BesselModel:
    torch.manual_seed(0)
    return BesselModel("bessel", NUMERIC, BesselNet(len(NUMERIC)).state_dict(), n_inputs=len(NUMERIC))


def no_contract_model(frame: pd.DataFrame) -> NoContract:
    trained = train_mlp(frame, epochs=1)
    return NoContract("mlp", NUMERIC, trained.state_dict, n_inputs=len(NUMERIC))


# --- scikit-learn ----------------------------------------------------------------------------------------


class Clipper(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Clips each numeric column to its training 1st..99th percentiles: a custom step with no skl2onnx converter."""

    def fit(self, X: Any, y: Any = None) -> Clipper:
        values = np.asarray(X, dtype=np.float64)
        self.low_ = np.percentile(values, 1, axis=0)
        self.high_ = np.percentile(values, 99, axis=0)
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.clip(np.asarray(X, dtype=np.float64), self.low_, self.high_)


def fit_sklearn(frame: pd.DataFrame, kind: str) -> Any:
    """A fitted Pipeline over NUMERIC and `country`: kind `logistic`, `boosting` or `custom` (logistic, with a
    Clipper before the numeric columns' scaler)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encode = ColumnTransformer(
        [("numeric", StandardScaler(), NUMERIC), ("country", OneHotEncoder(handle_unknown="ignore"), [CATEGORICAL])]
    )
    if kind == "custom":
        # Clipping inside the numeric branch: the converter meets Clipper at encode.numeric.clip.
        numeric = Pipeline([("clip", Clipper()), ("scale", StandardScaler())])
        encode = ColumnTransformer(
            [("numeric", numeric, NUMERIC), ("country", OneHotEncoder(handle_unknown="ignore"), [CATEGORICAL])]
        )
    steps: list[tuple[str, Any]] = []
    steps.append(("encode", encode))
    if kind == "boosting":
        steps.append(("classify", GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0)))
    else:
        steps.append(("classify", LogisticRegression(max_iter=500)))
    return Pipeline(steps).fit(frame[[*NUMERIC, CATEGORICAL]], frame[LABEL])


# MLflow saves scikit-learn models with skops, which loads only the types it is told to trust.
TRUSTED_TYPES = ["sklearn.tree._tree.Tree", f"{__name__}.Clipper"]


def log_sklearn(pipeline: Any, name: str, example: pd.DataFrame) -> Any:
    """Log `pipeline` with a signature and predict_proba as the pyfunc's predict (this file in code_paths)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    inputs = example[[*NUMERIC, CATEGORICAL]]
    return mlflow.sklearn.log_model(
        pipeline, name=name, pyfunc_predict_fn="predict_proba", pip_requirements=["scikit-learn"],
        signature=infer_signature(inputs, pipeline.predict_proba(inputs)), code_paths=[__file__],
        skops_trusted_types=TRUSTED_TYPES,
    )  # fmt: skip


def log_pyfunc(model: TorchScorer, name: str, example: pd.DataFrame) -> Any:
    """Log a torch scorer with its input columns as the signature (this file in code_paths)."""
    from mlflow.models import infer_signature

    inputs = example[model.columns]
    return mlflow.pyfunc.log_model(
        name=name, python_model=model, signature=infer_signature(inputs, model.predict(None, inputs)),
        code_paths=[__file__], pip_requirements=["mlflow", "torch"],
    )  # fmt: skip


__all__ = [
    "BesselModel", "CNNModel", "Clipper", "MLPModel", "NoContract", "bessel_model", "fit_sklearn",
    "image_frame", "log_pyfunc", "log_sklearn", "no_contract_model", "tabular_frame", "train_cnn", "train_mlp",
]  # fmt: skip
