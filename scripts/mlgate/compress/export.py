"""FP32 ONNX graphs of a candidate: torch networks through torch.onnx, scikit-learn estimators through skl2onnx.

Runs in the project venv. Torch's dynamo exporter (torch.export + onnxscript) comes first; a network
it cannot trace or translate is tried once more with the TorchScript exporter, and the report says so.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate.errors import InputError

INPUT_NAME = "input"
OUTPUT_NAME = "output"
_OP_PATTERNS = (
    re.compile(r"op='([\w.:]+)'"),
    re.compile(r"operator '([\w.:]+)'"),
    re.compile(r"target=torch\.ops\.([\w.]+?)(?:\.default)?[ ,)]"),
    re.compile(r"\b((?:aten|prims)(?:::|\.)\w+)"),
)


@dataclass
class Exported:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    note: str = ""  # why the fallback was taken, if it was


def unsupported_op(error: BaseException) -> str | None:
    """The operator an exporter error names, e.g. `prims.bessel_j0` or `aten::fft_rfft`."""
    text = str(error)
    for pattern in _OP_PATTERNS:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


def _first_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return (text.splitlines() or [type(error).__name__])[0][:240]


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Python's and the process's stdout and stderr to nowhere. The exporters write past contextlib's redirects:
    the TorchScript exporter's C++ dumps its IR graph on fd 2, and torch.onnx's loggers hold the stderr of their
    import; the worker is a process of its own, so pointing its fds elsewhere for the export is safe."""
    quiet = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w", encoding="utf-8") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                warnings.simplefilter("ignore")
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def export_torch(network: Any, example: Any, path: Path) -> Exported:
    """Export `network` (eval mode, CPU) to `path` with a dynamic batch dimension."""
    import torch

    try:
        with _silenced():
            program = torch.onnx.export(
                network, (example,), dynamo=True, verbose=False, optimize=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip
            assert program is not None
            program.save(str(path))
        return Exported(path, "dynamo")
    except Exception as dynamo_error:
        op = unsupported_op(dynamo_error)
        first = f"op {op}" if op else _first_line(dynamo_error)
    try:
        with _silenced():
            torch.onnx.export(
                network, (example,), str(path), dynamo=False, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )  # fmt: skip
    except Exception as script_error:
        script_op = unsupported_op(script_error)
        raise InputError(
            f"the network does not export to ONNX: torch.export/onnxscript cannot translate {first}; the fallback, "
            f"the TorchScript exporter, failed too"
            + (f" on {script_op}" if script_op else f": {_first_line(script_error)}"),
            hint="replace the operator with ONNX-exportable ones (or register an onnxscript function for it), or "
            "remove `compress` from mlgate.yaml; no variant was built",
        ) from None
    return Exported(
        path,
        "torchscript",
        f"torch.export/onnxscript could not translate {first}; exported with the TorchScript exporter",
    )


SKLEARN_TYPES = {"float": "FloatTensorType", "int": "Int64TensorType", "str": "StringTensorType"}


def convert_sklearn(estimator: Any, columns: list[tuple[str, str]], path: Path) -> None:
    """Convert a fitted scikit-learn estimator (a Pipeline too) to ONNX: one (n, 1) input per column,
    probabilities as a plain tensor (no ZipMap), so the variant returns what predict_proba does."""
    from skl2onnx import to_onnx
    from skl2onnx.common import data_types

    initial_types = [(name, getattr(data_types, SKLEARN_TYPES[kind])([None, 1])) for name, kind in columns]
    quiet = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            onnx_model = to_onnx(estimator, initial_types=initial_types, options={"zipmap": False})
    except Exception as error:
        raise InputError(
            f"the scikit-learn model does not convert to ONNX: {_sklearn_reason(estimator, error)}",
            hint="use steps skl2onnx converts (https://onnx.ai/sklearn-onnx/supported.html), register a converter "
            "for the custom step, or remove `compress` from mlgate.yaml; no variant was built",
        ) from None
    path.write_bytes(onnx_model.SerializeToString())


def _sklearn_reason(estimator: Any, error: BaseException) -> str:
    text = _first_line(error)
    found = re.search(r"Unable to find a shape calculator for type '(?:<class ')?([\w.]+)", str(error))
    if found:
        step = found.group(1).rsplit(".", 1)[-1]
        for name, part in _steps(estimator):
            if type(part).__name__ == step:
                return f"step {name!r} ({step}) has no skl2onnx converter"
        return f"{step} has no skl2onnx converter"
    return text


def _steps(estimator: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    items = getattr(estimator, "steps", None) or getattr(estimator, "transformers_", None) or []
    for item in items:  # a Pipeline's (name, step); a ColumnTransformer's (name, transformer, columns)
        name, part = item[0], item[1]
        full = f"{prefix}{name}"
        found.append((full, part))
        found.extend(_steps(part, f"{full}."))
    return found
