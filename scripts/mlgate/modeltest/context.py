"""What the model tests run on: the holdout, the candidate and champion models, and perturbations.

This module runs inside the model project's venv (under pytest, through mlgate's plugin), where
the model's own libraries live; it imports only pandas, NumPy and mlflow besides mlgate's core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from mlgate.config import (
    THRESHOLD_METRIC_NAMES,
    LoadedConfig,
    Perturbation,
    ThresholdFromModel,
)
from mlgate.errors import InputError, ToolError
from mlgate.modeltest import metrics as m
from mlgate.modeltest.settings import config_error, settings_of
from mlgate.sources import load_source

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

Scores = npt.NDArray[np.float64]
LATENCY_WARMUP_CALLS = 3


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
    score_column: str | None
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
        return _score_vector(output, self.score_column, len(frame), self.uri)

    def holdout_scores(self, holdout: Holdout) -> Scores:
        key = id(holdout.frame)
        if key not in self._cache:
            self._cache[key] = self.scores(holdout.frame)
        return self._cache[key]


def latency_ms(models: list[ScoredModel], frame: pd.DataFrame, batch: int, repeats: int) -> list[dict[str, float]]:
    """p50 and p95 of each model's `predict` on `batch` rows, in milliseconds, after a few warm-up calls.

    The models' calls alternate, so a burst of load on a shared runner lands on both sides of a ratio.
    """
    rows = frame.iloc[np.arange(batch) % len(frame)] if batch > len(frame) else frame.iloc[:batch]
    inputs = [model.inputs(rows) for model in models]
    for _ in range(LATENCY_WARMUP_CALLS):
        for model, data in zip(models, inputs, strict=True):
            model.pyfunc.predict(data)
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for model, data, timings in zip(models, inputs, samples, strict=True):
            started = time.perf_counter()
            model.pyfunc.predict(data)
            timings.append((time.perf_counter() - started) * 1000.0)
    return [{"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95))} for t in samples]


def _score_vector(output: Any, column: str | None, rows: int, uri: str) -> Scores:
    if isinstance(output, pd.DataFrame):
        if column is not None:
            if column not in output.columns:
                raise InputError(
                    f"{uri}: predict returned the columns {list(map(str, output.columns))}, not {column!r}",
                    hint="set model_tests.score to the output column holding the positive-class score",
                )
            values = output[column].to_numpy()
        else:
            values = output.iloc[:, 0].to_numpy()
    elif isinstance(output, pd.Series):
        values = output.to_numpy()
    else:
        values = np.asarray(output)
        if values.ndim == 2 and values.shape[-1] == 2:  # predict_proba style: the positive class
            values = values[:, 1]
    scores = np.asarray(values, dtype=np.float64).ravel()
    if scores.size != rows:
        raise InputError(f"{uri}: predict returned {scores.size} scores for {rows} rows")
    return scores


def _threshold(pyfunc: PyFuncModel, setting: float | ThresholdFromModel) -> float:
    if isinstance(setting, ThresholdFromModel):
        value = (pyfunc.metadata.metadata or {}).get(setting.metadata)
        return float(value) if value is not None else setting.default
    return float(setting)


def load_model(loaded: LoadedConfig, uri: str, *, version: str | None = None) -> ScoredModel:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    settings = settings_of(loaded)
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise InputError(
            f"cannot load model {uri}: {str(exc).splitlines()[0][:300]}",
            hint="pass the model-uri output of the train step (models:/<model_id>) and the same tracking URI",
        ) from None
    return ScoredModel(uri, pyfunc, _threshold(pyfunc, settings.threshold), settings.score, version)


def load_champion(loaded: LoadedConfig) -> ScoredModel | None:
    """The production model `models:/<model>@<alias>`, or None when the alias does not exist yet."""
    settings = settings_of(loaded)
    baseline = settings.baseline
    if baseline is None:
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(baseline.model, baseline.alias)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise ToolError(f"reading models:/{baseline.model}@{baseline.alias}: {str(exc)[:300]}") from None
    return load_model(loaded, f"models:/{baseline.model}@{baseline.alias}", version=str(version.version))


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
    values = {name: getattr(m, name)(labels, scores, threshold) for name in THRESHOLD_METRIC_NAMES}
    values["roc_auc"] = m.roc_auc(labels, scores)
    values["pr_auc"] = m.pr_auc(labels, scores)
    values["recall_at_precision"] = m.recall_at_precision(labels, scores, at_precision)
    return values


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
    if not problems and _unchanged(before, after):
        problems.append("no row changes (a `replace` whose keys match no value, or `set` to the current value)")
    if problems:
        raise config_error(
            loaded,
            (*where, *change_key),
            f"the perturbation of {column!r} makes invalid rows: {'; '.join(problems)}",
            "change the perturbation so the rows stay realistic, or add `clip: true` to clip into the declared range",
        )
    out[column] = after
    return out


def _unchanged(before: pd.Series, after: pd.Series) -> bool:
    return bool(before.reset_index(drop=True).equals(after.reset_index(drop=True)))


def sample_rows(holdout: Holdout, rows: int, seed: int) -> pd.DataFrame:
    if rows >= holdout.rows:
        return holdout.frame
    order = np.sort(np.random.default_rng(seed).choice(holdout.rows, size=rows, replace=False))
    return holdout.frame.iloc[order].reset_index(drop=True)
