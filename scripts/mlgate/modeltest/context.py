"""What the model tests run on: the holdout, the candidate and champion models, and perturbations.

This module runs inside the model project's venv (under pytest, through mlgate's plugin), where
the model's own libraries live; it imports only pandas, NumPy and mlflow besides mlgate's core.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from mlgate.config import (
    LoadedConfig,
    Perturbation,
    Scalar,
    ThresholdFromModel,
)
from mlgate.errors import ConfigError, InputError, ToolError
from mlgate.mlflowio import loader_failure, scrub, store_error
from mlgate.modeltest import metrics as m
from mlgate.modeltest.settings import config_error, settings_of
from mlgate.sources import load_source

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

Scores = npt.NDArray[np.float64]
LATENCY_WARMUP_CALLS = 3
# Timed rounds of `repeats` calls each; a model's figures are those of its round with the lowest p95.
LATENCY_ROUNDS = 3
SQL_STORE_HINT = (
    "install mlflow (not mlflow-skinny alone), or sqlalchemy and alembic, in the venv that runs the model tests "
    "(environment.install; without one, mlgate's own: pip install 'mlgate[test-model]')"
)
# What pandas infers for an object column that still holds numbers (e.g. a pyfunc returning Python floats).
NUMERIC_OBJECTS = {"integer", "floating", "mixed-integer-float", "boolean", "decimal"}


@dataclass
class Holdout:
    """The rows the models are tested on (a seeded sample when model_tests.max_rows is set)."""

    source: str
    frame: pd.DataFrame
    labels: npt.NDArray[np.int64]

    @property
    def rows(self) -> int:
        return len(self.frame)


def load_holdout(loaded: LoadedConfig) -> Holdout:
    settings = settings_of(loaded)
    frame = load_source(loaded, settings.holdout).frame
    if settings.label not in frame.columns:
        raise config_error(
            loaded,
            ("model_tests", "label"),
            f"the holdout {settings.holdout!r} ({loaded.model.data.sources[settings.holdout].path}) has no "
            f"column {settings.label!r}; its columns: {', '.join(map(str, frame.columns))}",
            "set model_tests.label to the column of the true label, or point model_tests.holdout at a labelled file",
        )
    if settings.max_rows is not None and len(frame) > settings.max_rows:
        frame = frame.sample(n=settings.max_rows, random_state=settings.seed)
    frame = frame.reset_index(drop=True)
    raw = frame[settings.label]
    valid = raw.isin([0, 1, True, False])
    if not valid.all():
        bad = raw[~valid].head(3).tolist()
        raise config_error(
            loaded,
            ("model_tests", "label"),
            f"column {settings.label!r} of the holdout must hold 0/1 labels; found {bad}",
            "point model_tests.label at a binary label column (1 = the positive class the score predicts)",
        )
    return Holdout(settings.holdout, frame, np.asarray(raw, dtype=np.int64))


@dataclass
class ScoredModel:
    """A pyfunc model loaded from MLflow, with how to read a score out of its predictions."""

    uri: str
    pyfunc: PyFuncModel
    threshold: float
    score_output: str | int | None  # model_tests.score: an output column name or position
    loaded: LoadedConfig = field(repr=False)
    version: str | None = None
    _cache: dict[int, Scores] = field(default_factory=dict, repr=False)

    @property
    def input_schema(self) -> dict[str, str] | None:
        """Column name -> type of the model's input signature, None without one."""
        schema = self.pyfunc.metadata.get_input_schema()  # type: ignore[no-untyped-call]
        if schema is None or not schema.has_input_names():
            return None
        return {str(spec.name): str(getattr(spec, "type", "")) for spec in schema.inputs}

    def inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        schema = self.input_schema
        return frame[list(schema)] if schema else frame

    def scores(self, frame: pd.DataFrame) -> Scores:
        """Positive-class scores of `frame`'s rows (one float per row)."""
        output = self.pyfunc.predict(self.inputs(frame))
        return score_vector(self.loaded, output, self.score_output, len(frame), self.uri)

    def holdout_scores(self, holdout: Holdout) -> Scores:
        key = id(holdout.frame)
        if key not in self._cache:
            self._cache[key] = self.scores(holdout.frame)
        return self._cache[key]


@contextmanager
def pinned_threads(threads: int) -> Iterator[list[str]]:
    """Limit the loaded libraries' intra-op thread pools to `threads` inside the block, and restore them after.

    A threaded model on a busy 2-core runner measures the runner's other load, not itself: its budget
    then passes or fails at random. Yields what was pinned (the thread pools' names, "torch"); empty
    when nothing was loaded to pin.
    """
    pinned: list[str] = []
    with ExitStack() as stack:
        try:
            # Optional (a scikit-learn dependency, not mlgate's); untyped, hence imported by name.
            threadpoolctl = importlib.import_module("threadpoolctl")
        except ImportError:
            pass
        else:
            stack.enter_context(threadpoolctl.threadpool_limits(limits=threads))
            pinned += sorted({str(pool["internal_api"]) for pool in threadpoolctl.threadpool_info()})
        torch = sys.modules.get("torch")  # only when the model loaded it: importing torch costs seconds
        if torch is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
            pinned.append("torch")
        yield pinned


def threads_note(threads: int, pinned: list[str]) -> str:
    """The threads a latency was measured with, in words for the check's message."""
    count = f"{threads} thread{'s' if threads != 1 else ''}"
    if not pinned:
        return f"{count} requested, nothing to pin (threadpoolctl not installed, torch not loaded)"
    return f"{count} (model_tests.performance.latency_threads; pinned: {', '.join(pinned)})"


def latency_ms(
    models: list[ScoredModel], frame: pd.DataFrame, batch: int, repeats: int, threads: int
) -> tuple[list[dict[str, float]], list[str]]:
    """p50 and p95 of each model's `predict` on `batch` rows, in milliseconds, after a few warm-up calls,
    with the intra-op threads pinned to `threads`; and what was pinned.

    The models' calls alternate, so a burst of load on a shared runner lands on both sides of a ratio.
    They are timed in LATENCY_ROUNDS rounds of `repeats` calls each, and each model's figures are those
    of its round with the lowest p95 (as `timeit` keeps the best of its repeats): another process can
    only add time, so a round it hit is set aside, while a tail the model has itself shows in every round.
    """
    rows = frame.iloc[np.arange(batch) % len(frame)] if batch > len(frame) else frame.iloc[:batch]
    inputs = [model.inputs(rows) for model in models]
    best: list[dict[str, float] | None] = [None for _ in models]
    with pinned_threads(threads) as pinned:
        for _ in range(LATENCY_WARMUP_CALLS):
            for model, data in zip(models, inputs, strict=True):
                model.pyfunc.predict(data)
        for _ in range(LATENCY_ROUNDS):
            samples: list[list[float]] = [[] for _ in models]
            for _ in range(repeats):
                for model, data, timings in zip(models, inputs, samples, strict=True):
                    started = time.perf_counter()
                    model.pyfunc.predict(data)
                    timings.append((time.perf_counter() - started) * 1000.0)
            for index, timings in enumerate(samples):
                measured = {"p50_ms": float(np.percentile(timings, 50)), "p95_ms": float(np.percentile(timings, 95))}
                kept = best[index]
                if kept is None or measured["p95_ms"] < kept["p95_ms"]:
                    best[index] = measured
    return [kept for kept in best if kept is not None], pinned


def score_vector(loaded: LoadedConfig, output: Any, score: str | int | None, rows: int, uri: str) -> Scores:
    """The positive-class score of each row, read from whatever `predict` returned as model_tests.score says.

    Never a guess: an output with several columns and no `score`, or a `score` that names none of
    them, is an error listing what the output holds.
    """

    def problem(message: str, hint: str) -> ConfigError:
        return config_error(loaded, ("model_tests", "score"), f"{uri}: predict {message}", hint)

    if isinstance(output, pd.Series) and output.name is not None:
        output = output.to_frame()
    if isinstance(output, pd.DataFrame):
        names = [str(name) for name in output.columns]
        listed, last = ", ".join(names), len(names) - 1
        choices = f"set model_tests.score to one of the column names ({listed}) or a position 0..{last}"
        if len(names) == 1:
            choices = f"remove model_tests.score (a single output needs none) or set it to {names[0]!r} or 0"
        if score is None:
            if len(names) != 1:
                raise problem(
                    f"returns {len(names)} columns ({listed}) and model_tests.score does not say which one is "
                    "the positive-class score",
                    choices,
                )
            position = 0
        elif isinstance(score, str):
            if score not in names:
                raise problem(f"returns the columns {listed}; none is named {score!r}", choices)
            position = names.index(score)
        else:
            if score > last:
                raise problem(
                    f"returns {len(names)} column(s) ({listed}), so position {score} is out of range",
                    choices,
                )
            position = score
        values = output.iloc[:, position].to_numpy()
        what = f"column {names[position]!r}"
    else:
        array = np.asarray(output)
        shape = tuple(int(size) for size in array.shape)
        if array.ndim not in (1, 2):
            raise InputError(
                f"{uri}: predict returns an array of shape {shape}; mlgate reads one score per row (1-D) or one "
                "column per class (2-D)",
                hint="log the model so that its pyfunc predict returns scores, e.g. scikit-learn's predict_proba",
            )
        columns = 1 if array.ndim == 1 else shape[1]
        single = "remove model_tests.score (a single output needs none) or set it to 0"
        choices = single if columns == 1 else f"set model_tests.score to an index 0..{columns - 1}"
        if array.ndim == 2 and columns > 1:
            choices += " (scikit-learn's predict_proba: 1 is the class 1 of a 0/1 label)"
        if score is None and columns > 1:
            raise problem(
                f"returns an array of shape {shape} (one column per class, without names) and model_tests.score "
                "does not say which column is the positive-class score",
                choices,
            )
        if isinstance(score, str):
            raise problem(
                f"returns an array of shape {shape}, whose columns have no names; {score!r} names none", choices
            )
        position = score or 0
        if position >= columns:
            raise problem(f"returns an array of shape {shape}, so index {position} is out of range", choices)
        values = array if array.ndim == 1 else array[:, position]
        what = "its scores" if columns == 1 else f"column {position}"
    if not _numeric(values):
        example = next((value for value in values[:50] if value is not None), None)
        example = example.item() if isinstance(example, np.generic) else example  # 'ok', not np.str_('ok')
        raise problem(
            f"returns non-numeric values in {what} ({values.dtype}, e.g. {example!r}); a score is a number per row",
            "point model_tests.score at the positive-class probability or score, not a predicted label (a "
            "scikit-learn classifier: log it with pyfunc_predict_fn='predict_proba')",
        )
    scores = np.asarray(values, dtype=np.float64).ravel()
    if scores.size != rows:
        raise InputError(f"{uri}: predict returned {scores.size} scores for {rows} rows")
    if missing := int(np.isnan(scores).sum()):
        raise InputError(
            f"{uri}: predict returned NaN as the score of {missing} of {rows} rows",
            hint="the model must score every row; check how it handles the rows' missing or unusual values",
        )
    return scores


def _numeric(values: npt.NDArray[Any]) -> bool:
    if values.dtype.kind in "biuf":
        return True
    return values.dtype.kind == "O" and pd.api.types.infer_dtype(values, skipna=True) in NUMERIC_OBJECTS


def _threshold(pyfunc: PyFuncModel, setting: float | ThresholdFromModel) -> float:
    if isinstance(setting, ThresholdFromModel):
        value = (pyfunc.metadata.metadata or {}).get(setting.metadata)
        return float(value) if value is not None else setting.default
    return float(setting)


def load_model(
    loaded: LoadedConfig, uri: str, *, version: str | None = None, dst_path: str | None = None
) -> ScoredModel:
    """The pyfunc model at `uri`, its artifacts downloaded into `dst_path` (an existing folder the caller
    removes); without one MLflow downloads a server's model into a new temporary folder nobody removes."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    settings = settings_of(loaded)
    try:
        pyfunc = mlflow.pyfunc.load_model(uri, dst_path=dst_path)
    except MlflowException as exc:
        # A tracking URI this venv's MLflow cannot open is no fault of the model's: say what to fix instead.
        tracking_uri = mlflow.get_tracking_uri()
        raise store_error(exc, tracking_uri, sql_hint=SQL_STORE_HINT) or InputError(
            f"cannot load model {uri}: {scrub(str(exc), tracking_uri).splitlines()[0][:300]}",
            hint="pass the model-uri output of the train step (models:/<model_id>) and the same tracking URI",
        ) from None
    except ImportError as exc:  # the loader module MLmodel names, or a library it needs
        raise loader_failure(exc, None, uri) from None
    return ScoredModel(uri, pyfunc, _threshold(pyfunc, settings.threshold), settings.score, loaded, version)


def load_champion(loaded: LoadedConfig, *, dst_path: str | None = None) -> ScoredModel | None:
    """The production model `models:/<model>@<alias>`, or None when the alias does not exist yet."""
    settings = settings_of(loaded)
    baseline = settings.baseline
    if baseline is None:
        return None
    from mlflow import MlflowClient, get_tracking_uri
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(baseline.model, baseline.alias)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        tracking_uri = get_tracking_uri()
        raise store_error(exc, tracking_uri, sql_hint=SQL_STORE_HINT) or ToolError(
            f"reading models:/{baseline.model}@{baseline.alias}: {scrub(str(exc), tracking_uri)[:300]}"
        ) from None
    uri = f"models:/{baseline.model}@{baseline.alias}"
    return load_model(loaded, uri, version=str(version.version), dst_path=dst_path)


def _not_found(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower()


def no_champion_reason(loaded: LoadedConfig) -> str:
    """Why there is no champion: a first model (no registered model yet) or an alias never set.

    Said apart, because a typo in baseline.model also reads as "no champion" and makes every
    candidate promotable.
    """
    baseline = settings_of(loaded).baseline
    assert baseline is not None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().get_registered_model(baseline.model)
    except MlflowException as exc:
        if _not_found(exc):
            return (
                f"the registry has no model named {baseline.model!r} yet (a first model; if one exists, check "
                f"model_tests.baseline.model)"
            )
        raise ToolError(f"reading registered model {baseline.model!r}: {str(exc)[:300]}") from None
    return f"registered model {baseline.model!r} has no version with the alias @{baseline.alias} yet"


def check_signatures(loaded: LoadedConfig, candidate: ScoredModel, champion: ScoredModel) -> None:
    settings = settings_of(loaded)
    assert settings.baseline is not None
    if settings.baseline.allow_signature_change:
        return
    mine, theirs = candidate.input_schema, champion.input_schema
    if mine == theirs:
        return
    mine, theirs = mine or {}, theirs or {}
    parts = []
    if missing := sorted(set(theirs) - set(mine)):
        parts.append(f"the candidate drops {', '.join(missing)}")
    if added := sorted(set(mine) - set(theirs)):
        parts.append(f"the candidate adds {', '.join(added)}")
    common = sorted(set(mine) & set(theirs))
    changed = [f"{name} {theirs[name]} -> {mine[name]}" for name in common if mine[name] != theirs[name]]
    if changed:
        parts.append(f"types change: {', '.join(changed)}")
    raise config_error(
        loaded,
        ("model_tests", "baseline"),
        f"the champion {champion.uri} (version {champion.version}) has a different input signature from the "
        f"candidate {candidate.uri}: {'; '.join(parts) or 'one of them has no signature'}",
        "a baseline comparison needs both models to read the same inputs; if the change is intended, set "
        "model_tests.baseline.allow_signature_change: true (each model then reads its own columns)",
    )


def classification_metrics(
    labels: npt.NDArray[np.int64], scores: Scores, threshold: float, at_precision: float
) -> dict[str, float]:
    return m.classification(labels, scores, threshold, at_precision)


def _expectation_of(loaded: LoadedConfig, column: str) -> tuple[float | None, float | None, list[Any] | None]:
    declared = loaded.model.data.expectations.columns.get(column)
    if declared is None:
        return None, None, None
    return declared.min, declared.max, declared.allowed


def perturb(
    loaded: LoadedConfig,
    frame: pd.DataFrame,
    column: str,
    change: Perturbation,
    where: tuple[str | int, ...],
    seed: int = 0,
    *,
    column_key: tuple[str | int, ...] = ("column",),
    change_key: tuple[str | int, ...] = ("perturb",),
    rows_named: str = "rows",
) -> pd.DataFrame:
    """A copy of `frame` with `column` changed; an error naming the check when the result is not valid data.

    Valid means: the column keeps its kind (an integer column stays integral), no value becomes
    null, and values stay inside the column's data.expectations range and allowed set (or are
    clipped into the range with `clip: true`).
    """
    if column not in frame.columns:
        raise config_error(
            loaded,
            (*where, *column_key),
            f"column {column!r} does not exist in the holdout; its columns: {', '.join(map(str, frame.columns))}",
            "name a column of the holdout file",
        )
    out = frame.copy()
    before = frame[column]
    numeric = pd.api.types.is_numeric_dtype(before) and not pd.api.types.is_bool_dtype(before)
    if (change.add is not None or change.scale is not None) and not numeric:
        raise config_error(
            loaded,
            (*where, *change_key),
            f"`{'add' if change.add is not None else 'scale'}` needs a numeric column, but {column!r} holds "
            f"{before.dtype} values",
            "use `set`, `replace` or `shuffle` for text and categorical columns",
        )
    if change.add is not None:
        after = before + change.add
    elif change.scale is not None:
        after = before * change.scale
    elif change.set is not None:
        after = pd.Series([change.set] * len(before), index=before.index)
    elif change.replace is not None:
        after = before.replace(change.replace)
    else:
        order = np.random.default_rng(seed).permutation(len(before))
        after = pd.Series(before.to_numpy()[order], index=before.index)
    low, high, allowed = _expectation_of(loaded, column)
    if change.clip and numeric and (low is not None or high is not None):
        after = after.clip(lower=low, upper=high)
    problems: list[str] = []
    if after.isna().sum() > before.isna().sum():
        problems.append(f"{int(after.isna().sum() - before.isna().sum())} values become null")
    if pd.api.types.is_integer_dtype(before) and pd.api.types.is_numeric_dtype(after):
        fractional = after.dropna() % 1 != 0
        if fractional.any():
            example = after[fractional.index[fractional]].iloc[0]
            problems.append(f"{int(fractional.sum())} values are no longer integers (e.g. {example:g})")
        else:
            after = after.astype(before.dtype)
    elif pd.api.types.is_float_dtype(before) and pd.api.types.is_numeric_dtype(after):
        # `set: {amount: 5}` gives int64; the model's signature wants the column's own float type.
        after = after.astype(before.dtype)
    if pd.api.types.is_numeric_dtype(after) and not pd.api.types.is_bool_dtype(after):
        for bound, outside, word in ((low, after < (low or 0), "below"), (high, after > (high or 0), "above")):
            if bound is not None and outside.any():
                problems.append(
                    f"{int(outside.sum())} of {len(after)} values fall {word} {bound:g} "
                    f"(data.expectations.columns.{column}; e.g. {after[outside].iloc[0]:g})"
                )
    if allowed is not None:
        unknown = ~after.isin(allowed) & after.notna()
        if unknown.any():
            values = sorted({str(value) for value in after[unknown].head(50)})[:5]
            problems.append(f"values {values} are not in the allowed set of data.expectations.columns.{column}")
    if not problems and not changed_rows(before, after).any():
        raise config_error(
            loaded,
            (*where, *change_key),
            f"no row in scope changes: the perturbation of {column!r} leaves each of the {len(before)} "
            f"{rows_named} as it was",
            "a check on unchanged rows shows nothing: make the perturbation change the rows (a `replace` key must "
            "be a value of the column, `set` a value other than the current one), or select rows it changes with "
            "`where`",
        )
    if problems:
        raise config_error(
            loaded,
            (*where, *change_key),
            f"the perturbation of {column!r} makes invalid rows: {'; '.join(problems)}",
            "change the perturbation so the rows stay realistic, or add `clip: true` to clip into the declared range",
        )
    out[column] = after
    return out


def changed_rows(before: pd.Series, after: pd.Series) -> npt.NDArray[np.bool_]:
    """Which rows a perturbation changed (a null that stays null is unchanged); the rows a check is about."""
    before, after = before.reset_index(drop=True), after.reset_index(drop=True)
    same = before.eq(after) | (before.isna() & after.isna())
    return ~same.to_numpy(dtype=bool)


def describe_where(where: dict[str, Scalar | list[Scalar]], *, exact: bool = False) -> str:
    """`where` in words, e.g. "where contract = two-year and region in [north, south]"; empty without one.

    `exact` quotes text values, for an error where `'1'` and `1` must look different.
    """
    show = repr if exact else str
    parts = [
        f"{column} in [{', '.join(map(show, wanted))}]" if isinstance(wanted, list) else f"{column} = {show(wanted)}"
        for column, wanted in where.items()
    ]
    return f"where {' and '.join(parts)}" if parts else ""


def select_rows(
    loaded: LoadedConfig, frame: pd.DataFrame, where: dict[str, Scalar | list[Scalar]], key: tuple[str | int, ...]
) -> pd.DataFrame:
    """The rows of `frame` matching every entry of a check's `where` (equality, or membership for a list).

    Declarative on purpose: no query strings, so mlgate.yaml never runs code through a filter.
    """
    if not where:
        return frame
    keep = np.ones(len(frame), dtype=bool)
    for column, wanted in where.items():
        if column not in frame.columns:
            raise config_error(
                loaded,
                (*key, "where", column),
                f"column {column!r} does not exist in the holdout; its columns: {', '.join(map(str, frame.columns))}",
                "name a column of the holdout file",
            )
        keep &= frame[column].isin(wanted if isinstance(wanted, list) else [wanted]).to_numpy(dtype=bool)
    if not keep.any():
        held = "; ".join(
            f"{column} holds e.g. {', '.join(map(str, frame[column].dropna().unique()[:6]))}" for column in where
        )
        raise config_error(
            loaded,
            (*key, "where"),
            f"{describe_where(where, exact=True)} matches none of the holdout's {len(frame)} rows ({held})",
            "a value must equal the column's values exactly (same spelling and type: `0` and `'0'` differ)",
        )
    return frame[keep].reset_index(drop=True)


def sample_rows(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    if rows >= len(frame):
        return frame
    order = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    return frame.iloc[order].reset_index(drop=True)
