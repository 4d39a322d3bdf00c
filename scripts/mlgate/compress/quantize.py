"""INT8 post-training quantization of an FP32 ONNX graph with onnxruntime, dynamic or static (QDQ).

Runs in the project venv. Dynamic quantization stores the weights as INT8 and quantizes activations on
the fly: the choice for Linear/MatMul networks, needing no data. Static quantization inserts
QuantizeLinear/DequantizeLinear pairs whose activation ranges come from a calibration set: the choice
for convolutional networks, where dynamic quantization leaves the Conv layers in float. `auto` picks
by the graph's operators and says why.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate.errors import InputError

QUANTIZABLE_DYNAMIC = {"MatMul", "Gemm", "LSTM", "GRU", "Attention", "EmbedLayerNormalization", "Gather"}
CONVOLUTIONS = {"Conv", "ConvTranspose"}
MIN_CALIBRATION_ROWS = 16
CALIBRATION_BATCH = 64


@dataclass
class Quantized:
    path: Path
    mode: str  # "dynamic" or "static"
    reason: str


def operator_counts(path: Path) -> Counter[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def choose_mode(ops: Counter[str], setting: str) -> tuple[str | None, str]:
    """(mode, why): `setting` when forced, else static with a Conv, dynamic with MatMul/Gemm, None without either."""
    convolutions = sum(ops[op] for op in CONVOLUTIONS)
    linear = sum(ops[op] for op in QUANTIZABLE_DYNAMIC if op != "Gather")
    described = f"{convolutions} Conv, {linear} MatMul/Gemm"
    if setting != "auto" and (convolutions or linear):
        return setting, f"compress.quantize.mode is {setting} ({described})"
    if convolutions:
        return "static", f"static QDQ: the graph has {described}; dynamic quantization would leave Conv in float"
    if linear:
        return "dynamic", (
            f"dynamic: {linear} MatMul/Gemm and no Conv in the graph; INT8 weights, activations quantized at run "
            "time, no calibration"
        )
    kinds = ", ".join(sorted(ops)) or "none"
    return None, f"nothing to quantize: no Conv, MatMul or Gemm among the graph's operators ({kinds})"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _preprocess(source: Path, target: Path) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, graph optimisation); the input on failure."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
        return target
    except Exception:
        return source


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a feature matrix, in batches."""

    def __init__(self, input_name: str, matrix: Any) -> None:
        self.batches = [
            {input_name: matrix[start : start + CALIBRATION_BATCH]}
            for start in range(0, len(matrix), CALIBRATION_BATCH)
        ]
        self.position = 0

    def get_next(self) -> dict[str, Any] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def quantize(
    source: Path, target: Path, mode: str, *, calibration: Any = None, calibration_what: str = "the calibration set"
) -> Quantized:
    """Quantize `source` into `target` (`mode` dynamic or static; static needs `calibration`, a float32 matrix)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    prepared = _preprocess(source, target.with_suffix(".pre.onnx"))
    if mode == "dynamic":
        with _quiet():
            quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=False)
        return Quantized(target, "dynamic", "")
    matrix = np.asarray(calibration, dtype=np.float32) if calibration is not None else np.empty((0, 0), np.float32)
    if len(matrix) < MIN_CALIBRATION_ROWS:
        raise InputError(
            f"static quantization needs at least {MIN_CALIBRATION_ROWS} calibration rows; {calibration_what} has "
            f"{len(matrix)}",
            hint="point compress.quantize.calibration.source at a data source with more rows, raise "
            "compress.quantize.calibration.rows, or set compress.quantize.mode: dynamic",
        )
    import onnx

    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    with _quiet():
        quantize_static(
            str(prepared), str(target), _Reader(input_name, matrix),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            per_channel=True, calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
    return Quantized(target, "static", "")
