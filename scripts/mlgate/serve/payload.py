"""Request bodies in, predictions out: MLflow's scoring formats for /invocations, plain records for /predict.

/invocations parses with MLflow's own scoring-server functions, so a client of `mlflow models serve`
gets the same answer (`{"predictions": ...}`) here; the difference is the errors: a payload that
lacks a column of the model's signature is a 400 naming the column, and the model raising is a 500.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlgate.serve.model import ServedModel

JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class PayloadError(Exception):
    """The request's fault: answered with `status` (400, 415, 422) and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ModelError(Exception):
    """The model raised while predicting: a 500."""


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}") from None


def parse_invocations(body: bytes, content_type: str, model: ServedModel) -> tuple[Any, dict[str, Any] | None]:
    """(model input, params) of an /invocations body, as `mlflow models serve` parses it."""
    from io import StringIO

    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    mime = content_type.split(";", 1)[0].strip().lower()
    schema = model.input_schema
    try:
        if mime == CSV_TYPE:
            return scoring_server.parse_csv_input(StringIO(body.decode("utf-8")), schema=schema), None  # type: ignore[arg-type]
        if mime != JSON_TYPE:
            raise PayloadError(
                f"content type {content_type or '(none)'!r} is not supported; send {JSON_TYPE} or {CSV_TYPE}", 415
            )
        decoded = _decode(body)
        if not isinstance(decoded, dict):
            raise PayloadError(f"the body must be a JSON object with exactly one of the keys {', '.join(FORMATS)}")
        found = [key for key in FORMATS if key in decoded]
        if len(found) != 1:
            keys = ", ".join(map(str, decoded)) or "none"
            raise PayloadError(f"the body must hold exactly one of the keys {', '.join(FORMATS)} (it has: {keys})")
        params = decoded.get("params")
        if params is not None and not isinstance(params, dict):
            raise PayloadError("params must be a JSON object")
        data = scoring_server.infer_and_parse_data({found[0]: decoded[found[0]]}, schema)  # type: ignore[arg-type]
    except MlflowException as exc:
        raise PayloadError(exc.message) from None
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise PayloadError(f"cannot read the payload as the model's input: {exc}") from None
    return data, params


def parse_records(body: bytes) -> list[dict[str, Any]]:
    """The rows of a /predict body: a JSON list of objects, or `{"records": [...]}`."""
    decoded = _decode(body)
    if isinstance(decoded, dict) and "records" in decoded:
        decoded = decoded["records"]
    if not isinstance(decoded, list) or not all(isinstance(row, dict) for row in decoded):
        raise PayloadError('the body must be a JSON list of records ([{"column": value}, ...]) or {"records": [...]}')
    if not decoded:
        raise PayloadError("the body holds no records")
    return decoded


def check_columns(data: Any, model: ServedModel) -> None:
    """A 400 naming each column of the model's signature that a tabular input lacks."""
    import pandas as pd

    if isinstance(data, pd.DataFrame) and model.required:
        missing = model.missing_columns(data)
        if missing:
            listed = ", ".join(repr(name) for name in missing)
            raise PayloadError(
                f"missing column{'s' if len(missing) > 1 else ''} {listed}: the model's signature requires "
                f"{', '.join(model.required)}",
                400,
            )


def predict(model: ServedModel, data: Any, params: dict[str, Any] | None) -> Any:
    """The model's output; an input its signature rejects is a PayloadError, anything else it raises a ModelError."""
    from mlflow.exceptions import MlflowException

    check_columns(data, model)
    try:
        return model.predict(data, params)
    except MlflowException as exc:
        # pyfunc's schema enforcement (a type that does not convert, an unknown param) is the request's fault.
        if exc.error_code in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE") and "schema" in exc.message.lower():
            raise PayloadError(exc.message.splitlines()[0][:500]) from None
        raise ModelError(f"{type(exc).__name__}: {exc.message.splitlines()[0][:500]}") from exc
    except Exception as exc:
        raise ModelError(f"{type(exc).__name__}: {str(exc)[:500]}") from exc


def jsonable(output: Any) -> Any:
    """The predictions as `mlflow models serve` writes them (a DataFrame as records)."""
    from mlflow.utils.proto_json_utils import _get_jsonable_obj

    return _get_jsonable_obj(output, pandas_orient="records")  # type: ignore[no-untyped-call]


def scores(output: Any) -> list[float] | None:
    """One score per row where the output has one: its single column, a column named `score`, or the
    positive class of two; None for any other output (it is still served, not scored in the metrics)."""
    import numpy as np
    import pandas as pd

    if isinstance(output, pd.Series):
        output = output.to_frame()
    if isinstance(output, pd.DataFrame):
        if "score" in output.columns:
            values = output["score"].to_numpy()
        elif output.shape[1] == 1:
            values = output.iloc[:, 0].to_numpy()
        else:
            return None
    else:
        try:
            values = np.asarray(output)
        except (ValueError, TypeError):
            return None
        if values.ndim == 2 and int(values.shape[-1]) in (1, 2):
            values = values[:, -1]
        elif values.ndim != 1:
            return None
    if values.dtype.kind not in "biuf":
        return None
    return [float(value) for value in values]
