"""Request bodies in, predictions out: MLflow's scoring formats for /invocations, plain records for /predict.

/invocations parses with MLflow's own scoring-server functions, so a client of `mlflow models serve`
gets the same answer (`{"predictions": ...}`) here; the difference is the errors: whatever a body gets wrong
is a 4xx naming the problem (a body nested too deep, a column of the model's signature it lacks, a value
the signature refuses, named by column and row), and only the model raising is a 500. The values are
checked on the table as the client sent it, before MLflow converts it to the signature's types: the
conversion turns a JSON null into False in a boolean column and a numeric string past float64's range
into infinity, without a word.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.types import Schema

    from mlgate.serve.model import ServedModel

# The largest request body, as nginx's default client_max_body_size (1m); `serve.max_body_bytes` in mlgate.yaml.
DEFAULT_MAX_BODY_BYTES = 1 << 20
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# The formats MLflow reads as a DataFrame (dataframe_from_parsed_json's orient: the key without `dataframe_`).
FRAME_FORMATS = ("dataframe_split", "dataframe_records")
# Signature types whose values are numbers: a value that is not one, or that overflows to infinity, is refused.
NUMBER_TYPES = ("integer", "long", "float", "double")
# How a value is spelled in a message: long enough to recognise, short enough for a log line.
SHOWN_CHARS = 40
# At most this many columns' problems in one message.
SHOWN_PROBLEMS = 5


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
    except RecursionError:  # `[[[[...` a hundred thousand deep: the parser's recursion limit, not the server's fault
        raise PayloadError(_too_deep()) from None


def _too_deep() -> str:
    return "the body nests arrays or objects too deeply to be read (a payload is a table: rows of columns)"


def parse_invocations(body: bytes, content_type: str, model: ServedModel) -> tuple[Any, dict[str, Any] | None]:
    """(model input, params) of an /invocations body, as `mlflow models serve` parses it, its values checked
    against the model's signature first (check_values)."""
    from io import StringIO

    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    mime = content_type.split(";", 1)[0].strip().lower()
    schema = model.input_schema
    named = schema if schema is not None and schema.has_input_names() else None
    try:
        if mime == CSV_TYPE:
            text = body.decode("utf-8")
            if named is not None:
                check_values(_csv_table(text), named)
            return scoring_server.parse_csv_input(StringIO(text), schema=schema), None  # type: ignore[arg-type]
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
        form, payload = found[0], decoded[found[0]]
        if named is not None and form in FRAME_FORMATS:
            return _checked_frame(payload, form[len("dataframe_") :], named), params
        if named is not None:
            rows = _tf_table(payload)
            if rows is not None:
                check_values(rows, named)
        data = scoring_server.infer_and_parse_data({form: payload}, schema)  # type: ignore[arg-type]
    except PayloadError:
        raise
    except MlflowException as exc:
        raise PayloadError(exc.message) from None
    except RecursionError:
        raise PayloadError(_too_deep()) from None
    except Exception as exc:  # whatever MLflow's parsing raises on a payload it cannot read is the payload's fault
        raise PayloadError(f"cannot read the payload as the model's input: {_described(exc)}") from None
    return data, params


def parse_predict(body: bytes, model: ServedModel) -> Any:
    """The rows of a /predict body as the model's input frame, its values checked against the signature first."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    records = parse_records(body)
    schema = model.input_schema
    try:
        if not model.columns or schema is None:
            return pd.DataFrame.from_records(records)
        # The signature's order and types, as /invocations' dataframe_records gets them from MLflow.
        return _checked_frame(records, "records", schema)
    except PayloadError:
        raise
    except MlflowException as exc:
        raise PayloadError(f"cannot read the records as the model's input: {exc.message[:300]}") from None
    except RecursionError:
        raise PayloadError(_too_deep()) from None
    except Exception as exc:
        raise PayloadError(f"cannot read the records as the model's input: {_described(exc)}") from None


def _checked_frame(payload: Any, orient: str, schema: Schema) -> pd.DataFrame:
    """What MLflow's infer_and_parse_data makes of a dataframe_split or dataframe_records payload, in its two
    halves (the frame as sent, then its conversion to the signature's types) with check_values between them."""
    from mlflow.utils import proto_json_utils

    table: pd.DataFrame = proto_json_utils.dataframe_from_parsed_json(payload, pandas_orient=orient)  # type: ignore[no-untyped-call]
    check_values(table, schema)
    converted: pd.DataFrame = proto_json_utils.cast_df_types_according_to_schema(table, schema)  # type: ignore[no-untyped-call]
    return converted


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _csv_table(text: str) -> pd.DataFrame | None:
    """A CSV body as sent, every cell a string or missing; None where pandas cannot read it (MLflow then says why)."""
    from io import StringIO

    import pandas as pd

    try:
        return pd.read_csv(StringIO(text), dtype=object)
    except Exception:
        return None


def _tf_table(payload: Any) -> pd.DataFrame | None:
    """The rows of an `instances` or `inputs` payload that is a table (records, columns, or one row of scalars);
    None for tensors and anything else, which MLflow's parsing judges alone."""
    import pandas as pd

    try:
        if isinstance(payload, list) and payload and all(isinstance(row, dict) for row in payload):
            return pd.DataFrame.from_records(payload)
        if isinstance(payload, dict) and payload:
            values = list(payload.values())
            if all(isinstance(value, list) for value in values) and len({len(value) for value in values}) == 1:
                return pd.DataFrame(payload)
            if not any(isinstance(value, list | dict) for value in values):
                return pd.DataFrame([payload])
    except Exception:  # columns of different lengths, or nested beyond a table: MLflow's parsing says why
        return None
    return None


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


def check_values(table: pd.DataFrame | None, schema: Schema) -> None:
    """A 400 naming the column and the first row (counted from 0) of each value the model's signature refuses:
    a missing value (null, NaN) in a column it requires, a value that is no number in a numeric column, and
    a number past its type's range (infinity, or a numeric string like "1e999" that overflows to it).

    `table` is the payload as sent, before MLflow's conversion to the signature's types; only the columns the
    signature names with a plain type are judged, in vectorised passes. A column the signature marks
    optional (`required: false`, as infer_signature marks one with missing values) may hold missing values.
    """
    import numpy as np
    import pandas as pd
    from mlflow.types import ColSpec, DataType

    if table is None or table.empty or not schema.has_input_names():
        return
    # A name twice in the payload gives a frame, not a column: MLflow's conversion refuses it.
    twice = set(table.columns[table.columns.duplicated()])
    dtypes = {name: dtype for name, dtype in zip(table.columns, table.dtypes, strict=True) if name not in twice}
    judged: list[tuple[str, DataType, bool]] = []
    for spec in schema.inputs:
        kind = spec.type if isinstance(spec, ColSpec) else None
        name = str(spec.name)
        if isinstance(kind, DataType) and name in dtypes:
            judged.append((name, kind, bool(getattr(spec, "required", True))))
    # The columns pandas already made numbers (JSON numbers) are judged together, as one array: only those with
    # a missing value where none is allowed, or a number past their type's range, are looked at one by one.
    numeric = [item for item in judged if pd.api.types.is_numeric_dtype(dtypes[item[0]])]
    suspects = {name for name, _, _ in judged} - {name for name, _, _ in numeric}
    if numeric:
        names = [name for name, _, _ in numeric]
        chosen = table if names == list(table.columns) else table[names]  # every column, in order: no copy to select
        block = chosen.to_numpy(dtype=np.float64, na_value=np.nan)
        required = np.array([needed for _, _, needed in numeric])
        largest = np.array([_largest(kind, dtypes[name]) for name, kind, _ in numeric])
        with np.errstate(invalid="ignore"):
            wrong = ((np.isnan(block) & required) | (np.abs(block) > largest)).any(axis=0)
        suspects |= {numeric[index][0] for index in np.flatnonzero(wrong)}
    problems: list[str] = []
    for name, kind, needed in judged:
        if name in suspects:
            problem = _column_problem(name, table[name], kind, needed)
            if problem is not None:
                problems.append(problem)
    if problems:
        more = f" (and {len(problems) - SHOWN_PROBLEMS} more columns)" if len(problems) > SHOWN_PROBLEMS else ""
        raise PayloadError("; ".join(problems[:SHOWN_PROBLEMS]) + more, 400)


def _column_problem(name: str, column: pd.Series[Any], kind: Any, required: bool) -> str | None:
    """What is wrong with one column's values for the signature's type `kind`, in a phrase; None when nothing."""
    import numpy as np

    missing = column.isna().to_numpy(dtype=bool)
    if kind.name in NUMBER_TYPES:
        numbers, unreadable, overflow = _as_numbers(column, missing)
        if unreadable.any():
            # A string MLflow reads as NaN ("NaN", "nan") is a missing value, not text.
            words = column.astype(str).str.strip().str.lower()
            spelled_nan = unreadable & words.isin(("nan", "+nan", "-nan")).to_numpy(dtype=bool)
            missing, unreadable = missing | spelled_nan, unreadable & ~spelled_nan
        if unreadable.any():
            row = _first(unreadable)
            return (
                f"column {name!r}: {_shown(column.iloc[row])} at row {row} is not a number (the model's signature "
                f"declares {kind.name}){_also(unreadable)}"
            )
        with np.errstate(invalid="ignore"):
            too_big = overflow | (np.abs(numbers) > _largest(kind, column.dtype))
        if too_big.any():
            row = _first(too_big)
            dtype = np.dtype(kind.to_numpy())
            becomes = "it would be infinity" if dtype.kind == "f" else f"at most {int(np.iinfo(dtype).max)}"
            return (
                f"column {name!r}: {_shown(column.iloc[row])} at row {row} is beyond the range of {kind.name} "
                f"({becomes}){_also(too_big)}"
            )
    if required and missing.any():
        row = _first(missing)
        value = column.iloc[row]
        # pandas makes a JSON null NaN in a numeric column: the two cannot be told apart, nor need to be.
        said = _shown(value) if isinstance(value, str) else "null or NaN"
        return (
            f"column {name!r}: a missing value ({said}) at row {row}, and the model's signature requires "
            f"{name!r} ({kind.name}) to have a value{_also(missing)}"
        )
    return None


def _as_numbers(column: pd.Series[Any], missing: Any) -> tuple[Any, Any, Any]:
    """(the values as float64, where a present value is no number, where it is a number past float64's range)."""
    import numpy as np
    import pandas as pd

    none = np.zeros(len(column), dtype=bool)
    if pd.api.types.is_numeric_dtype(column.dtype):  # JSON numbers: pandas made a numeric column already
        return column.to_numpy(dtype=np.float64, na_value=np.nan), none, none
    try:
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return numbers, np.isnan(numbers) & ~missing, none
    except (OverflowError, TypeError, ValueError):  # an integer past float64 (10**400): one value at a time
        values = np.full(len(column), np.nan)
        unreadable, overflow = none.copy(), none.copy()
        for row, value in enumerate(column.tolist()):
            if missing[row]:
                continue
            try:
                values[row] = float(value)
            except OverflowError:
                overflow[row] = True
            except (TypeError, ValueError):
                unreadable[row] = True
        return values, unreadable, overflow


def _largest(kind: Any, sent: Any) -> float:
    """The largest value of a numeric signature type, for a column pandas read as `sent`: float32's for `float`
    (1e39 overflows it to infinity), int32's and int64's for `integer` and `long` (numpy's cast would wrap a
    larger number without a word); no bound for a type that is no number, or for int64 values bound for `long`."""
    import numpy as np

    if kind.name not in NUMBER_TYPES:
        return float("inf")
    dtype = np.dtype(kind.to_numpy())
    if dtype.kind in "iu" and dtype == np.dtype(sent):  # the type's own integers already (int64 for long)
        return float("inf")
    if dtype.kind == "f":
        return float(np.finfo(dtype).max)
    largest = int(np.iinfo(dtype).max)
    bound = float(largest)  # int64's largest rounds up to 2**63, which itself overflows: the float just below it
    return bound if int(bound) == largest else float(np.nextafter(bound, 0.0))


def _first(mask: Any) -> int:
    import numpy as np

    return int(np.flatnonzero(mask)[0])


def _also(mask: Any) -> str:
    count = int(mask.sum())
    return f" ({count} rows like it)" if count > 1 else ""


def _shown(value: Any) -> str:
    text = repr(value.item() if hasattr(value, "item") and not isinstance(value, str | bytes) else value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


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
