"""The data gate: load sources, run the Great Expectations suite, and check drift and leakage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlgate.config import LoadedConfig
from mlgate.data.drift import FeatureDrift, compare
from mlgate.data.expectations import ExpectationOutcome, run_expectations
from mlgate.data.leakage import LeakageResult, find_leakage
from mlgate.dvcio import dvc_pull
from mlgate.errors import InputError
from mlgate.sources import LoadedSource, load_source


@dataclass(frozen=True)
class SourceSummary:
    name: str
    path: str
    format: str
    rows: int
    columns: int


@dataclass
class DataReport:
    """Everything the data gate found; `passed` is the verdict."""

    sources: list[SourceSummary] = field(default_factory=list)
    expectations: list[ExpectationOutcome] = field(default_factory=list)
    drift_reference: str | None = None
    drift_current: str | None = None
    drift: list[FeatureDrift] = field(default_factory=list)
    leakage: LeakageResult | None = None
    docs_index: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step

    @property
    def failed_expectations(self) -> list[ExpectationOutcome]:
        return [o for o in self.expectations if not o.success]

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [d for d in self.drift if d.status == "fail"]

    @property
    def passed(self) -> bool:
        leaked = self.leakage is not None and not self.leakage.passed
        return not (self.failed_expectations or self.drifted or leaked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "sources": [vars(s) for s in self.sources],
            "expectations": [o.to_dict() for o in self.expectations],
            "drift": {
                "reference": self.drift_reference,
                "current": self.drift_current,
                "features": [d.to_dict() for d in self.drift],
            },
            "leakage": self.leakage.to_dict() if self.leakage else None,
            "docs_index": str(self.docs_index) if self.docs_index else None,
            "timings": self.timings,
        }


def sources_to_validate(config: LoadedConfig, sources: list[str] | None) -> list[str]:
    """The sources the suite runs on: those asked for, else `data.validate`, else every source."""
    declared = config.model.data.sources
    names = sources or config.model.data.validate_sources or list(declared)
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise InputError(
            f"unknown data source(s) {', '.join(map(repr, unknown))} "
            f"(declared: {', '.join(sorted(declared)) or 'none'})",
            hint="pass names declared under data.sources in mlgate.yaml",
            file=str(config.path),
            line=config.line_of("data", "sources"),
        )
    return names


def needed_sources(config: LoadedConfig, sources: list[str] | None, drift_current: str | None) -> list[str]:
    """Every source the gate reads: validated ones, drift's pair and leakage's pair."""
    data = config.model.data
    names = list(sources_to_validate(config, sources))
    if data.drift:
        names += [data.drift.reference, drift_current or data.drift.current]
    if data.leakage:
        names += list(data.leakage.between)
    return list(dict.fromkeys(names))


def _require_column(
    config: LoadedConfig, source: LoadedSource, column: str, why: str, key: tuple[str | int, ...]
) -> None:
    if column not in source.frame.columns:
        raise InputError(
            f"data source {source.name!r} ({source.path}) has no column {column!r}, needed by {why} "
            f"(columns: {', '.join(map(str, source.frame.columns[:20]))})",
            hint=f"fix {'.'.join(map(str, key))} in mlgate.yaml or the file's header",
            file=str(config.path),
            line=config.line_of(*key),
        )


def validate_data(
    config: LoadedConfig,
    *,
    sources: list[str] | None = None,
    docs_dir: Path | None = None,
    drift_current: str | None = None,
) -> DataReport:
    """Run the data gate described by `config.model.data`; raises InputError for unusable input."""
    data = config.model.data
    if drift_current is not None and drift_current not in data.sources:
        raise InputError(
            f"drift current {drift_current!r} is not a declared source "
            f"(declared: {', '.join(sorted(data.sources)) or 'none'})",
            hint="pass a name declared under data.sources",
            file=str(config.path),
            line=config.line_of("data", "drift", "current"),
        )
    validate = sources_to_validate(config, sources)
    report = DataReport()
    datetime_columns = [c for c, rule in data.expectations.columns.items() if rule.type == "datetime"]

    started = time.perf_counter()
    loaded: dict[str, LoadedSource] = {}
    for name in needed_sources(config, sources, drift_current):
        loaded[name] = load_source(config, name, datetime_columns=datetime_columns)
    report.sources = [SourceSummary(s.name, str(s.path), s.format, s.rows, s.frame.shape[1]) for s in loaded.values()]
    report.timings["load"] = time.perf_counter() - started

    started = time.perf_counter()
    frames: dict[str, pd.DataFrame] = {name: loaded[name].frame for name in validate}
    report.expectations, report.docs_index = run_expectations(frames, data.expectations, docs_dir=docs_dir)
    report.timings["expectations"] = time.perf_counter() - started

    if data.drift:
        started = time.perf_counter()
        report.drift_reference = data.drift.reference
        report.drift_current = drift_current or data.drift.current
        reference, current = loaded[report.drift_reference], loaded[report.drift_current]
        for index, feature in enumerate(data.drift.features or []):
            for source in (reference, current):
                _require_column(config, source, feature, "drift", ("data", "drift", "features", index))
        report.drift = compare(reference.frame, current.frame, data.drift)
        report.timings["drift"] = time.perf_counter() - started

    if data.leakage:
        started = time.perf_counter()
        left, right = (loaded[n] for n in data.leakage.between)
        for source in (left, right):
            _require_column(config, source, data.leakage.key, "leakage", ("data", "leakage", "key"))
        report.leakage = find_leakage(
            data.leakage.key,
            left.name,
            left.frame[data.leakage.key],
            right.name,
            right.frame[data.leakage.key],
        )
        report.timings["leakage"] = time.perf_counter() - started
    report.timings["total"] = sum(report.timings.values())
    return report


__all__ = [
    "DataReport",
    "ExpectationOutcome",
    "FeatureDrift",
    "LeakageResult",
    "SourceSummary",
    "dvc_pull",
    "needed_sources",
    "validate_data",
]
