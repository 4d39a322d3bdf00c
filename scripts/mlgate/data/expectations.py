"""Build a Great Expectations suite from mlgate.yaml, run it on each source, and build Data Docs."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlgate.config import ColumnExpectation, Expectations

# GX reports usage analytics by default; a CI gate must not phone home.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx
from great_expectations.data_context.types.base import ProgressBarsConfig

Key = tuple[str | int, ...]
_BASE: Key = ("data", "expectations")
_EXAMPLES = 5

_INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
_FLOAT_DTYPES = ["float16", "float32", "float64"]
# GX compares the column dtype with these names; see `_gx_frame` for the dtypes it cannot match.
TYPE_LISTS: dict[str, list[str]] = {
    "int": _INT_DTYPES,
    "float": _FLOAT_DTYPES + _INT_DTYPES,  # a float column whose values are all whole parses as int
    "str": ["StringDtype"],
    "bool": ["bool", "BooleanDtype"],
    "datetime": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
}


@dataclass(frozen=True, kw_only=True)
class ExpectationOutcome:
    """One expectation run on one source: what was checked, whether it held, what was seen."""

    source: str
    column: str | None
    check: str  # row_count, exact_columns, exists, type, not_null, between, in_set, unique
    expected: str  # e.g. "between [0, 50000]"
    success: bool
    observed: str
    key: Key  # the mlgate.yaml key that declared it: config.line_of(*key) is its line

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "column": self.column,
            "check": self.check,
            "expected": self.expected,
            "success": self.success,
            "observed": self.observed,
            "key": list(self.key),
        }


def _gx_expectations() -> Any:
    # GX 1.x ships these classes without re-exporting them explicitly (mypy strict rejects it).
    return gx.expectations


def _number(value: float | None) -> str:
    if value is None:
        return "∞"
    return str(int(value)) if float(value).is_integer() else str(value)


def _gx_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with dtypes that GX 1.x can type-check.

    GX matches a dtype against the names in a type list; it has no name that matches pandas 3's
    default `str` dtype, categoricals or tz-aware datetimes, and checks object columns value by
    value (slowly). Such columns become the `string` dtype, plain numpy dtypes or naive UTC.
    """
    columns: dict[str, Any] = {}
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        if isinstance(dtype, pd.StringDtype):
            series = series.astype("string")
        elif isinstance(dtype, pd.CategoricalDtype):
            categories = dtype.categories
            if pd.api.types.is_string_dtype(categories) or pd.api.types.is_object_dtype(categories):
                series = series.astype("string")
            else:
                series = series.astype(categories.dtype if not series.hasnans else "float64")
        elif isinstance(dtype, pd.DatetimeTZDtype):
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        elif pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(series, skipna=True) in (
            "string",
            "empty",
        ):
            series = series.astype("string")
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(dtype):
            if not pd.api.types.is_bool_dtype(dtype):
                nullable = series.hasnans or pd.api.types.is_float_dtype(dtype)
                series = series.astype("float64" if nullable else dtype.numpy_dtype)  # type: ignore[attr-defined]
        columns[str(name)] = series
    return pd.DataFrame(columns, copy=False)


def _type_list(declared: str, series: pd.Series) -> list[str]:
    names = list(TYPE_LISTS[declared])
    # An int column with a null cannot be int64 in numpy: pandas reads it as float64.
    if declared == "int" and pd.api.types.is_float_dtype(series.dtype) and series.hasnans:
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        present = values[~np.isnan(values)]
        if present.size == 0 or bool(np.all(np.mod(present, 1.0) == 0.0)):
            names.append(str(series.dtype))
    return names


@dataclass(frozen=True)
class _Planned:
    expectation: Any
    outcome: ExpectationOutcome  # success and observed are filled in from the GX result


def _plan(source: str, frame: pd.DataFrame, spec: Expectations) -> list[_Planned]:
    """The GX expectations for one source, each with the outcome it will fill in."""
    E = _gx_expectations()
    planned: list[_Planned] = []

    def add(expectation: Any, column: str | None, check: str, expected: str, key: Key) -> None:
        outcome = ExpectationOutcome(
            source=source, column=column, check=check, expected=expected, success=False, observed="", key=key
        )
        planned.append(_Planned(expectation, outcome))

    row_count = spec.row_count
    add(
        E.ExpectTableRowCountToBeBetween(min_value=row_count.min, max_value=row_count.max),
        None,
        "row_count",
        f"row_count [{row_count.min}, {_number(row_count.max)}]",
        (*_BASE, "row_count"),
    )
    if spec.exact_columns:
        add(
            E.ExpectTableColumnsToMatchSet(column_set=list(spec.columns), exact_match=True),
            None,
            "exact_columns",
            f"exactly the columns {', '.join(spec.columns)}",
            (*_BASE, "exact_columns"),
        )
    present = {str(c) for c in frame.columns}
    for column, rules in spec.columns.items():
        key: Key = (*_BASE, "columns", column)
        add(E.ExpectColumnToExist(column=column), column, "exists", "exists", key)
        if column not in present:
            # GX fails the existence check; the column's other checks have nothing to run on.
            continue
        _plan_column(add, column, rules, frame[column], key)
    return planned


def _plan_column(add: Any, column: str, rules: ColumnExpectation, series: pd.Series, key: Key) -> None:
    E = _gx_expectations()
    mostly = rules.mostly
    suffix = f" (mostly {mostly:g})" if mostly < 1.0 else ""
    if rules.type is not None:
        add(
            E.ExpectColumnValuesToBeInTypeList(column=column, type_list=_type_list(rules.type, series)),
            column,
            "type",
            f"type {rules.type}",
            (*key, "type"),
        )
    if rules.not_null:
        add(
            E.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly),
            column,
            "not_null",
            "not_null" + suffix,
            (*key, "not_null"),
        )
    if rules.min is not None or rules.max is not None:
        add(
            E.ExpectColumnValuesToBeBetween(column=column, min_value=rules.min, max_value=rules.max, mostly=mostly),
            column,
            "between",
            f"between [{_number(rules.min) if rules.min is not None else '-∞'}, {_number(rules.max)}]" + suffix,
            (*key, "min" if rules.max is None else "max"),
        )
    if rules.allowed is not None:
        shown = ", ".join(str(v) for v in rules.allowed[:8]) + (", ..." if len(rules.allowed) > 8 else "")
        add(
            E.ExpectColumnValuesToBeInSet(column=column, value_set=list(rules.allowed), mostly=mostly),
            column,
            "in_set",
            f"in_set {{{shown}}}" + suffix,
            (*key, "allowed"),
        )
    if rules.unique:
        add(E.ExpectColumnValuesToBeUnique(column=column), column, "unique", "unique", (*key, "unique"))


def _example(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "null"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "error")
    for nested in info.values():
        if isinstance(nested, dict) and nested.get("raised_exception"):
            return str(nested.get("exception_message") or "error")
    return None


def _observed(check: str, result: dict[str, Any], error: str | None, dtype: str) -> str:
    if error is not None:
        return f"could not evaluate on a column of dtype {dtype}: {error}"
    if check == "exact_columns":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        parts = []
        if mismatched.get("unexpected"):
            parts.append("unexpected columns " + ", ".join(map(str, mismatched["unexpected"])))
        if mismatched.get("missing"):
            parts.append("missing columns " + ", ".join(map(str, mismatched["missing"])))
        return "; ".join(parts) or f"columns {result.get('observed_value')}"
    if "unexpected_percent" in result:
        percent = float(result.get("unexpected_percent") or 0.0)
        count = int(result.get("unexpected_count") or 0)
        what = "null" if check == "not_null" else "unexpected"
        text = f"{what} {percent:.3g}% ({count} rows)"
        examples = result.get("partial_unexpected_list") or []
        if check != "not_null" and examples:
            if check == "unique":
                examples = list(dict.fromkeys(map(_example, examples)))
            else:
                examples = [_example(v) for v in examples]
            text += f", e.g. [{', '.join(examples[:_EXAMPLES])}{', ...' if count > _EXAMPLES else ''}]"
        return text
    if check == "row_count":
        return f"{result.get('observed_value')} rows"
    if check == "type":
        return f"dtype {dtype}"
    return str(result.get("observed_value", ""))


def _between_key(outcome: ExpectationOutcome, result: dict[str, Any], rules: ColumnExpectation | None) -> Key:
    """Point a failed range check at `min` or `max`, whichever its examples break."""
    if rules is None or rules.min is None or rules.max is None:
        return outcome.key
    for value in result.get("partial_unexpected_list") or []:
        try:
            if float(value) < rules.min:
                return (*outcome.key[:-1], "min")
        except (TypeError, ValueError):
            continue
    return outcome.key


def run_expectations(
    frames: dict[str, pd.DataFrame], spec: Expectations, *, docs_dir: Path | None = None
) -> tuple[list[ExpectationOutcome], Path | None]:
    """Run the suite declared by `spec` on each frame; returns the outcomes and Data Docs' index.html."""
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(site)  # the default site writes to a temporary folder
    if docs_dir is not None:
        context.add_data_docs_site(
            "mlgate",
            {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    datasource = context.data_sources.add_pandas("mlgate")
    outcomes: list[ExpectationOutcome] = []
    for source, frame in frames.items():
        gx_frame = _gx_frame(frame)
        planned = _plan(source, gx_frame, spec)
        batch = datasource.add_dataframe_asset(source).add_batch_definition_whole_dataframe("whole")
        for index, item in enumerate(planned):
            item.expectation.meta = {"mlgate_index": index, "mlgate_check": item.outcome.check}
        # The whole suite at once: each add_expectation on a stored suite writes the suite to its store again.
        expectations = [item.expectation for item in planned]
        suite = context.suites.add(gx.ExpectationSuite(name=f"mlgate-{source}", expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"mlgate-{source}", data=batch, suite=suite)
        )
        results = definition.run(
            batch_parameters={"dataframe": gx_frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
        by_index: dict[int, Any] = {}
        for result in results.results:
            meta = result.expectation_config.meta if result.expectation_config else None
            if meta and "mlgate_index" in meta:
                by_index[int(meta["mlgate_index"])] = result
        for index, item in enumerate(planned):
            outcome = item.outcome
            found = by_index.get(index)
            if found is None:
                outcomes.append(_with(outcome, False, "not evaluated by Great Expectations", outcome.key))
                continue
            result = found
            detail = dict(result.result or {})
            error = _exception_message(result.exception_info)
            dtype = str(gx_frame[outcome.column].dtype) if outcome.column in gx_frame.columns else "?"
            if outcome.check == "type":
                dtype = str(frame[outcome.column].dtype)
            if outcome.check == "exists":
                shown = ", ".join(map(str, gx_frame.columns[:20]))
                observed = "present" if result.success else f"column missing (columns: {shown})"
            else:
                observed = _observed(outcome.check, detail, error, dtype)
            key = outcome.key
            if outcome.check == "between" and not result.success and outcome.column is not None:
                key = _between_key(outcome, detail, spec.columns.get(outcome.column))
            outcomes.append(_with(outcome, bool(result.success) and error is None, observed, key))
    index_html: Path | None = None
    if docs_dir is not None:
        context.build_data_docs(site_names=["mlgate"])
        index_html = docs_dir / "index.html"
    return outcomes, index_html


def _with(outcome: ExpectationOutcome, success: bool, observed: str, key: Key) -> ExpectationOutcome:
    return ExpectationOutcome(
        source=outcome.source,
        column=outcome.column,
        check=outcome.check,
        expected=outcome.expected,
        success=success,
        observed=observed,
        key=key,
    )


def failed(outcomes: Sequence[ExpectationOutcome]) -> list[ExpectationOutcome]:
    return [o for o in outcomes if not o.success]
