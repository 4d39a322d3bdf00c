"""The MLflow pyfunc of a compressed variant: the project's preprocessing, an ONNX graph on onnxruntime, its output.

`mlgate compress` logs every variant with this file in the model's `code_paths`, so a variant loads
wherever the original did (`mlflow models serve`, `mlgate test-model`, `mlgate serve`) without mlgate
installed. It needs onnxruntime, NumPy and pandas, plus whatever the project's preprocessing imports.

Two kinds of graph:
- `network`: a torch network exported to ONNX. `features(frame)` (the project's preprocessing) gives the
  float32 matrix the network takes; `outputs(raw, frame)` turns its raw output into the frame the original
  pyfunc returns. Both are the project's own callables, pickled with the variant.
- `sklearn`: a scikit-learn estimator converted by skl2onnx. Each input column is a graph input of shape
  (n, 1); the variant returns what the original's `pyfunc_predict_fn` returned (`predict_proba`: the class
  probabilities, one column per class; `predict`: the labels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

ONNX_ARTIFACT = "onnx_model"


class OnnxVariant(PythonModel):
    """A compressed variant: the same input signature and output as the model it was made from."""

    def __init__(
        self,
        kind: str,
        threads: int,
        *,
        features: Callable[[pd.DataFrame], Any] | None = None,
        outputs: Callable[[np.ndarray, pd.DataFrame], Any] | None = None,
        columns: list[tuple[str, str]] | None = None,
        predict_fn: str = "predict_proba",
    ) -> None:
        if kind not in ("network", "sklearn"):
            raise ValueError(f"unknown variant kind {kind!r}")
        self.kind = kind
        self.threads = int(threads)
        self.features = features
        self.outputs = outputs
        self.columns = list(columns or [])  # sklearn: (graph input name, "float" | "int" | "str")
        self.predict_fn = predict_fn
        self._session: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None  # an onnxruntime session does not pickle; load_context opens it
        return state

    def open(self, path: str) -> None:
        """Open the ONNX graph at `path` on the CPU with `threads` intra-op threads (one inter-op thread)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def load_context(self, context: Any) -> None:
        self.open(context.artifacts[ONNX_ARTIFACT])

    def run(self, matrix: np.ndarray) -> np.ndarray:
        """The network graph's raw output for a float32 feature matrix (kind `network`)."""
        session = self._session
        name = session.get_inputs()[0].name
        result: np.ndarray = session.run(None, {name: np.ascontiguousarray(matrix, dtype=np.float32)})[0]
        return result

    def feeds(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The sklearn graph's inputs: one (n, 1) array per column, typed as the converter declared it."""
        feeds: dict[str, np.ndarray] = {}
        for name, kind in self.columns:
            values = frame[name]
            if kind == "str":
                array = values.astype(object).where(values.notna(), "").astype(str).to_numpy(dtype=object)
            elif kind == "int":
                array = values.to_numpy(dtype=np.int64)
            else:
                array = values.to_numpy(dtype=np.float32, na_value=np.nan)
            feeds[name] = array.reshape(-1, 1)
        return feeds

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            raise RuntimeError("the ONNX session is not open (load the variant with mlflow.pyfunc.load_model)")
        if self.kind == "network":
            assert self.features is not None and self.outputs is not None
            raw = self.run(np.asarray(self.features(model_input)))
            return self.outputs(raw, model_input)
        label, probabilities = self._session.run(None, self.feeds(model_input))[:2]
        return probabilities if self.predict_fn == "predict_proba" else label
