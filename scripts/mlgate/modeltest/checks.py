"""The declarative model checks of `model_tests` in mlgate.yaml, each a function of one shared session.

Three families, as the field names them: performance (metric floors on the holdout and on slices,
latency budgets), behavioral (CheckList's minimum-functionality, invariance and directional tests)
and baseline (the candidate against the `@champion` model on the same rows).
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlgate.config import (
    DirectionalCase,
    InvarianceCase,
    LatencyBudget,
    LoadedConfig,
    MinimumFunctionalityCase,
    ModelTestsConfig,
    Perturbation,
    SliceCheck,
)
from mlgate.errors import InputError, MlgateError
from mlgate.modeltest.context import (
    Holdout,
    ScoredModel,
    changed_rows,
    check_signatures,
    classification_metrics,
    describe_where,
    latency_ms,
    load_champion,
    load_holdout,
    load_model,
    no_champion_reason,
    perturb,
    sample_rows,
    select_rows,
    threads_note,
)
from mlgate.modeltest.settings import config_error, settings_of

Outcome = Literal["passed", "failed", "skipped"]
FAILING_CASES_SHOWN = 5
DEFAULT_RATIO_BATCH = 1000


@dataclass(kw_only=True)
class CheckResult:
    """The outcome of one declared check, as the job summary and the PR comment show it."""

    id: str
    family: str
    name: str
    line: int | None
    outcome: Outcome
    value: float | None = None
    bound: str = ""
    champion: float | None = None
    message: str = ""
    cases: list[dict[str, Any]] = field(default_factory=list)
    rows: int | None = None  # behavioral checks: the rows in scope, of which `value` is the passing share

    def to_json(self) -> dict[str, Any]:
        return {key: json_safe(value) for key, value in self.__dict__.items()}


def json_safe(value: Any) -> Any:
    """`value` with NumPy scalars made Python ones and NaN made None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return value


class Session:
    """The holdout and both models, loaded once and shared by every check and fixture."""

    def __init__(self, loaded: LoadedConfig, candidate_uri: str) -> None:
        # MLflow downloads each model's artifacts into a temporary folder it never removes: download them
        # here instead, and remove the folder with the session (close), or at once when loading fails.
        self._downloads = tempfile.TemporaryDirectory(prefix="mlgate-models-")
        try:
            self._load(loaded, candidate_uri)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove the downloaded models: after the last prediction (a model may read its artifacts in predict)."""
        self._downloads.cleanup()

    def _download_dir(self, name: str) -> str:
        folder = Path(self._downloads.name) / name
        folder.mkdir()
        return str(folder)

    def _load(self, loaded: LoadedConfig, candidate_uri: str) -> None:
        self.loaded = loaded
        self.settings: ModelTestsConfig = settings_of(loaded)
        self.holdout: Holdout = load_holdout(loaded)
        self.candidate: ScoredModel = load_model(loaded, candidate_uri, dst_path=self._download_dir("candidate"))
        self._require_inputs(self.candidate)
        self.champion: ScoredModel | None = load_champion(loaded, dst_path=self._download_dir("champion"))
        self.no_champion = no_champion_reason(loaded) if self.champion is None and self.settings.baseline else ""
        if self.champion is not None:
            check_signatures(loaded, self.candidate, self.champion)
            self._require_inputs(self.champion)
        for model in (self.candidate, *([self.champion] if self.champion else [])):
            self._score_holdout(model)
        self.scopes: dict[str, Scope] = {}
        self._validate_checks()
        self._latency: dict[tuple[str, int], dict[str, float]] = {}
        self.latency_threads = ""  # the threads the latencies were measured with, in words

    @property
    def baseline_name(self) -> str | None:
        baseline = self.settings.baseline
        return f"models:/{baseline.model}@{baseline.alias}" if baseline else None

    def _require_inputs(self, model: ScoredModel) -> None:
        schema = model.input_schema or {}
        missing = [name for name in schema if name not in self.holdout.frame.columns]
        if missing:
            raise config_error(
                self.loaded,
                ("model_tests", "holdout"),
                f"the holdout {self.settings.holdout!r} lacks the column(s) {', '.join(missing)} that "
                f"{model.uri} takes as input",
                "point model_tests.holdout at a file with every input column of the model's signature",
            )

    def _score_holdout(self, model: ScoredModel) -> None:
        """Score the holdout before any check: an output mlgate cannot read a score from (model_tests.score)
        stops the run with one error, instead of every check erroring with the same traceback."""
        try:
            model.holdout_scores(self.holdout)
        except MlgateError:
            raise
        except Exception as exc:  # the model's own code: anything can come out of it
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise InputError(
                f"{model.uri}: predict failed on the holdout {self.settings.holdout!r} ({self.holdout.rows} rows): "
                f"{type(exc).__name__}: {first}",
                hint="load the model with mlflow.pyfunc.load_model and call predict on the holdout's rows to see "
                "the whole error",
            ) from None

    def _validate_checks(self) -> None:
        """Every column and perturbation checked before any check runs: a typo is an error, not a failure."""
        columns = set(map(str, self.holdout.frame.columns))
        for index, piece in enumerate(self.settings.performance.slices):
            if piece.column not in columns:
                raise config_error(
                    self.loaded,
                    ("model_tests", "performance", "slices", index, "column"),
                    f"slice column {piece.column!r} does not exist in the holdout; "
                    f"columns: {', '.join(sorted(columns))}",
                    "name a column of the holdout file",
                )
        behavioral = self.settings.behavioral
        for index, mft in enumerate(behavioral.minimum_functionality):
            where = ("model_tests", "behavioral", "minimum_functionality", index)
            base = self._sample(where, mft.where, mft.rows, self.settings.seed + index)
            rows_named = " ".join(("sampled rows", describe_where(mft.where))).strip()
            frame = base
            for column, value in mft.set.items():
                frame = perturb(
                    self.loaded, frame, column, Perturbation(set=value), where, column_key=("set", column),
                    change_key=("set", column), rows_named=rows_named,
                )  # fmt: skip
            # Every sampled row is in scope: a row that already held the set values is a template all the same.
            self.scopes[_mft_id(index)] = Scope(base, frame, len(base), describe_where(mft.where))
        invariance: list[InvarianceCase | DirectionalCase] = [*behavioral.invariance]
        directional: list[InvarianceCase | DirectionalCase] = [*behavioral.directional]
        cases = [("invariance", invariance), ("directional", directional)]
        for family, declared in cases:
            for index, case in enumerate(declared):
                where = ("model_tests", "behavioral", family, index)
                base = self._sample(where, case.where, case.rows, self.settings.seed + index)
                changed = perturb(
                    self.loaded, base, case.column, case.perturb, where, self.settings.seed + index,
                    rows_named=" ".join(("sampled rows", describe_where(case.where))).strip(),
                )  # fmt: skip
                # Only the rows the perturbation changed say anything about the model: a `replace` of one
                # category leaves the others as they were, and they would pass an invariance check (or fail an
                # `increase`) whatever the model does.
                scope = changed_rows(base[case.column], changed[case.column])
                self.scopes[f"{family}[{index}]"] = Scope(
                    base[scope].reset_index(drop=True), changed[scope].reset_index(drop=True), len(base),
                    describe_where(case.where),
                )  # fmt: skip

    def _sample(self, key: tuple[str | int, ...], where: dict[str, Any], rows: int, seed: int) -> pd.DataFrame:
        """A behavioral check's sample: `rows` of the holdout rows matching its `where` (seeded)."""
        return sample_rows(select_rows(self.loaded, self.holdout.frame, where, key), rows, seed)

    @functools.cached_property
    def candidate_metrics(self) -> dict[str, float]:
        return self._metrics(self.candidate)

    @functools.cached_property
    def champion_metrics(self) -> dict[str, float] | None:
        return self._metrics(self.champion) if self.champion else None

    def _metrics(self, model: ScoredModel) -> dict[str, float]:
        scores = model.holdout_scores(self.holdout)
        return classification_metrics(
            self.holdout.labels, scores, model.threshold, self.settings.performance.at_precision
        )

    def latency(self, model: ScoredModel, batch: int) -> dict[str, float]:
        key = (model.uri, batch)
        if key not in self._latency:
            models = [self.candidate, *([self.champion] if self.champion else [])]
            performance = self.settings.performance
            measured, pinned = latency_ms(
                models, self.holdout.frame, batch, performance.latency_repeats, performance.latency_threads
            )
            self.latency_threads = threads_note(performance.latency_threads, pinned)
            for each, result in zip(models, measured, strict=True):
                self._latency[(each.uri, batch)] = result
        return self._latency[key]

    def ratio_batch(self) -> int:
        budgets = self.settings.performance.latency
        return max(budget.batch for budget in budgets) if budgets else DEFAULT_RATIO_BATCH


@dataclass
class Scope:
    """The rows a behavioral check judges: those of its sample the perturbation changed, before and after."""

    base: pd.DataFrame
    changed: pd.DataFrame
    sampled: int  # rows drawn from the holdout (those matching `where`)
    where: str  # the `where` filter in words, empty without one

    @property
    def rows(self) -> int:
        return len(self.base)

    @property
    def in_scope(self) -> str:
        """Which rows are in scope, e.g. "the sampled ones where contract = two-year that the perturbation changes"."""
        return " ".join(part for part in ("the sampled ones", self.where, "that the perturbation changes") if part)

    @property
    def sample(self) -> str:
        """The sample in words, e.g. "1000 sampled rows where contract = two-year"."""
        return " ".join(part for part in (f"{self.sampled} sampled rows", self.where) if part)


@dataclass
class Check:
    """One declared check: where it is in mlgate.yaml and how it runs."""

    id: str
    family: str
    name: str
    where: tuple[str | int, ...]
    run: Callable[[Session], CheckResult]


def _mft_id(index: int) -> str:
    return f"minimum_functionality[{index}]"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"


def declared_checks(loaded: LoadedConfig) -> list[Check]:
    """The checks `model_tests` declares, in file order within each family."""
    settings = settings_of(loaded)
    line = loaded.line_of
    checks: list[Check] = []
    where: tuple[str | int, ...]
    performance = settings.performance
    for name, bound in performance.metrics.bounds().items():
        where = ("model_tests", "performance", "metrics", name)
        checks.append(
            Check(f"performance.{name}", "performance", name, where, _metric_floor(name, bound, line(*where)))
        )
    for index, piece in enumerate(performance.slices):
        where = ("model_tests", "performance", "slices", index)
        checks.append(
            Check(f"performance.slices.{piece.column}", "performance", f"{piece.column} slices", where,
                  _slices(piece, line(*where)))
        )  # fmt: skip
    for index, budget in enumerate(performance.latency):
        where = ("model_tests", "performance", "latency", index)
        checks.append(
            Check(f"performance.latency.batch_{budget.batch}", "performance", f"latency, batch {budget.batch}",
                  where, _latency(budget, line(*where)))
        )  # fmt: skip
    behavioral = settings.behavioral
    for index, mft in enumerate(behavioral.minimum_functionality):
        where = ("model_tests", "behavioral", "minimum_functionality", index)
        checks.append(
            Check(f"behavioral.{_mft_id(index)}", "behavioral", mft.name, where, _mft(index, mft, line(*where)))
        )
    for index, inv in enumerate(behavioral.invariance):
        where = ("model_tests", "behavioral", "invariance", index)
        checks.append(Check(f"behavioral.invariance[{index}]", "behavioral", inv.name, where,
                            _perturbation_check("invariance", index, inv, line(*where))))  # fmt: skip
    for index, direction in enumerate(behavioral.directional):
        where = ("model_tests", "behavioral", "directional", index)
        checks.append(Check(f"behavioral.directional[{index}]", "behavioral", direction.name, where,
                            _perturbation_check("directional", index, direction, line(*where))))  # fmt: skip
    baseline = settings.baseline
    if baseline is not None:
        for name, allowed in baseline.max_regression.items():
            where = ("model_tests", "baseline", "max_regression", name)
            checks.append(Check(f"baseline.{name}", "baseline", f"{name} vs champion", where,
                                _regression(name, allowed, line(*where))))  # fmt: skip
        if baseline.max_latency_ratio is not None:
            where = ("model_tests", "baseline", "max_latency_ratio")
            checks.append(Check("baseline.latency_ratio", "baseline", "p95 latency vs champion", where,
                                _latency_ratio(baseline.max_latency_ratio, line(*where))))  # fmt: skip
    return checks


def _metric_floor(name: str, bound: float, line: int | None) -> Callable[[Session], CheckResult]:
    def run(session: Session) -> CheckResult:
        value = session.candidate_metrics[name]
        champion = session.champion_metrics[name] if session.champion_metrics else None
        ok = value >= bound
        return CheckResult(
            id=f"performance.{name}",
            family="performance",
            name=name,
            line=line,
            outcome="passed" if ok else "failed",
            value=value,
            bound=f">= {bound:g}",
            champion=champion,
            message="" if ok else f"{name} {_fmt(value)} is below the floor {bound:g}",
        )

    return run


def _slices(piece: SliceCheck, line: int | None) -> Callable[[Session], CheckResult]:
    def run(session: Session) -> CheckResult:
        frame, labels = session.holdout.frame, session.holdout.labels
        scores = session.candidate.holdout_scores(session.holdout)
        failures: list[dict[str, Any]] = []
        small: list[str] = []
        worst = math.inf
        for value, index in frame.groupby(piece.column, dropna=False).indices.items():
            if len(index) < piece.min_rows:
                small.append(f"{value} ({len(index)} rows)")
                continue
            values = classification_metrics(
                labels[index], scores[index], session.candidate.threshold, session.settings.performance.at_precision
            )
            for name, bound in piece.metrics.bounds().items():
                got = values[name]
                worst = min(worst, got) if not math.isnan(got) else worst
                if not got >= bound:  # NaN (one class only in the slice) fails: the metric cannot be shown to hold
                    failures.append({piece.column: value, "rows": len(index), "metric": name, "value": got,
                                     "floor": bound})  # fmt: skip
        note = f"; not gated (fewer than {piece.min_rows} rows): {', '.join(small)}" if small else ""
        bounds = ", ".join(f"{name} >= {bound:g}" for name, bound in piece.metrics.bounds().items())
        # value: the lowest metric of any gated slice (of the first declared metric when several)
        message = (
            f"{len(failures)} slice metric(s) below the floor: "
            + ", ".join(f"{f[piece.column]} {f['metric']} {_fmt(f['value'])}" for f in failures[:8])
            if failures
            else f"every slice meets {bounds}"
        ) + note
        return CheckResult(
            id=f"performance.slices.{piece.column}",
            family="performance",
            name=f"{piece.column} slices",
            line=line,
            outcome="failed" if failures else "passed",
            value=worst if worst != math.inf else None,
            bound=bounds + " per slice",
            champion=None,
            message=message,
            cases=failures[:FAILING_CASES_SHOWN],
        )

    return run


def _latency(budget: LatencyBudget, line: int | None) -> Callable[[Session], CheckResult]:
    def run(session: Session) -> CheckResult:
        measured = session.latency(session.candidate, budget.batch)
        champion = session.latency(session.champion, budget.batch) if session.champion else None
        over = []
        bounds = []
        for key, limit in (("p50_ms", budget.p50_ms), ("p95_ms", budget.p95_ms)):
            if limit is None:
                continue
            bounds.append(f"{key[:3]} <= {limit:g} ms")
            if measured[key] > limit:
                over.append(f"{key[:3]} {measured[key]:.2f} ms > {limit:g} ms")
        found = "; ".join(over) if over else f"p50 {measured['p50_ms']:.2f} ms, p95 {measured['p95_ms']:.2f} ms"
        return CheckResult(
            id=f"performance.latency.batch_{budget.batch}",
            family="performance",
            name=f"latency, batch {budget.batch} (p95 ms)",
            line=line,
            outcome="failed" if over else "passed",
            value=measured["p95_ms"],
            bound=", ".join(bounds),
            champion=champion["p95_ms"] if champion else None,
            message=f"{found}; {session.latency_threads}",
        )

    return run


def _mft(index: int, case: MinimumFunctionalityCase, line: int | None) -> Callable[[Session], CheckResult]:
    def run(session: Session) -> CheckResult:
        scope = session.scopes[_mft_id(index)]
        frame = scope.changed
        scores = session.candidate.scores(frame)
        passed = (scores >= session.candidate.threshold).astype(int) == case.expect
        rate = float(passed.mean())
        champion = session.champion
        champion_rate = (
            float(((champion.scores(frame) >= champion.threshold).astype(int) == case.expect).mean())
            if champion
            else None
        )
        ok = rate >= case.pass_rate
        cases = []
        for row in np.flatnonzero(~passed)[:FAILING_CASES_SHOWN]:
            cases.append({**{c: frame[c].iloc[row] for c in case.set}, "score": scores[row], "expected": case.expect})
        return CheckResult(
            id=f"behavioral.{_mft_id(index)}",
            family="minimum functionality",
            name=case.name,
            line=line,
            outcome="passed" if ok else "failed",
            value=rate,
            bound=f"pass rate >= {case.pass_rate:g}",
            champion=champion_rate,
            message=f"{int(passed.sum())}/{len(passed)} rows predicted {case.expect} "
            f"(threshold {session.candidate.threshold:.3g}; {scope.sample})",
            cases=cases,
            rows=scope.rows,
        )

    return run


def _perturbation_check(
    family: Literal["invariance", "directional"],
    index: int,
    case: InvarianceCase | DirectionalCase,
    line: int | None,
) -> Callable[[Session], CheckResult]:
    def run(session: Session) -> CheckResult:
        scope = session.scopes[f"{family}[{index}]"]
        base, changed = scope.base, scope.changed
        before = session.candidate.scores(base)
        after = session.candidate.scores(changed)
        delta = after - before
        passed, rule = _passes(case, delta)
        rate = float(passed.mean())
        champion_rate = None
        if session.champion is not None:
            champion_delta = session.champion.scores(changed) - session.champion.scores(base)
            champion_rate = float(_passes(case, champion_delta)[0].mean())
        ok = rate >= case.pass_rate
        column = case.column
        cases = [
            {f"{column} before": base[column].iloc[row], f"{column} after": changed[column].iloc[row],
             "score before": before[row], "score after": after[row]}
            for row in np.flatnonzero(~passed)[:FAILING_CASES_SHOWN]
        ]  # fmt: skip
        return CheckResult(
            id=f"behavioral.{family}[{index}]",
            family=family,
            name=case.name,
            line=line,
            outcome="passed" if ok else "failed",
            value=rate,
            bound=f"pass rate >= {case.pass_rate:g}",
            champion=champion_rate,
            message=f"{int(passed.sum())}/{len(passed)} rows in scope keep {rule} when {case.column} is perturbed "
            f"({scope.rows} of {scope.sampled} rows in scope: {scope.in_scope}; median change "
            f"{float(np.median(delta)):+.4g})",
            cases=cases,
            rows=scope.rows,
        )

    return run


def _passes(case: InvarianceCase | DirectionalCase, delta: np.ndarray) -> tuple[np.ndarray, str]:
    """Which rows pass the case given their score changes, and the rule in words."""
    if isinstance(case, InvarianceCase):
        return np.abs(delta) <= case.tolerance, f"|score change| <= {case.tolerance:g}"
    tol = case.tolerance
    passed = {
        "increase": delta > tol,
        "decrease": delta < -tol,
        "not_decrease": delta >= -tol,
        "not_increase": delta <= tol,
    }[case.expect]
    return passed, f"score {case.expect.replace('_', ' ')}" + (f" (tolerance {tol:g})" if tol else "")


def _no_champion(check_id: str, name: str, line: int | None, session: Session) -> CheckResult:
    return CheckResult(
        id=check_id,
        family="baseline",
        name=name,
        line=line,
        outcome="skipped",
        message=f"no baseline yet: {session.baseline_name} does not exist: {session.no_champion} "
        "(the candidate is judged on the thresholds alone)",
    )


def _regression(name: str, allowed: float, line: int | None) -> Callable[[Session], CheckResult]:
    def run(session: Session) -> CheckResult:
        if session.champion_metrics is None:
            return _no_champion(f"baseline.{name}", f"{name} vs champion", line, session)
        value, champion = session.candidate_metrics[name], session.champion_metrics[name]
        ok = value >= champion - allowed
        return CheckResult(
            id=f"baseline.{name}",
            family="baseline",
            name=f"{name} vs champion",
            line=line,
            outcome="passed" if ok else "failed",
            value=value,
            bound=f">= champion - {allowed:g}",
            champion=champion,
            message=f"{name} {_fmt(value)} vs champion {_fmt(champion)} "
            f"(delta {value - champion:+.4f}, allowed -{allowed:g})",
        )

    return run


def _latency_ratio(limit: float, line: int | None) -> Callable[[Session], CheckResult]:
    def run(session: Session) -> CheckResult:
        if session.champion is None:
            return _no_champion("baseline.latency_ratio", "p95 latency vs champion", line, session)
        batch = session.ratio_batch()
        mine = session.latency(session.candidate, batch)["p95_ms"]
        theirs = session.latency(session.champion, batch)["p95_ms"]
        ratio = mine / theirs if theirs > 0 else math.inf
        ok = ratio <= limit
        return CheckResult(
            id="baseline.latency_ratio",
            family="baseline",
            name=f"p95 latency ratio vs champion, batch {batch}",
            line=line,
            outcome="passed" if ok else "failed",
            value=ratio,
            bound=f"<= {limit:g}x",
            champion=1.0,
            message=f"candidate p95 {mine:.2f} ms vs champion {theirs:.2f} ms (ratio {ratio:.2f}); "
            f"{session.latency_threads}",
        )

    return run


def promotion(session: Session, passed: bool) -> tuple[bool, str]:
    """Whether the candidate may replace the champion, and why."""
    baseline = session.settings.baseline
    if not passed:
        return False, "a check failed"
    if baseline is None:
        return True, "every check passed (no baseline configured)"
    if session.champion_metrics is None:
        return (
            True,
            f"every check passed; no baseline yet ({session.baseline_name} does not exist: {session.no_champion})",
        )
    metric = baseline.promotion_metric
    delta = session.candidate_metrics[metric] - session.champion_metrics[metric]
    if delta >= baseline.promotion_margin:
        return True, f"{metric} beats the champion by {delta:+.4f} (margin {baseline.promotion_margin:g})"
    return False, f"{metric} beats the champion by {delta:+.4f}, less than the margin {baseline.promotion_margin:g}"


__all__ = ["Check", "CheckResult", "Session", "config_error", "declared_checks", "json_safe", "promotion"]
