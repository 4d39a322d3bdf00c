"""mlgate's pytest plugin: model-test fixtures for a project's own tests, and mlgate.yaml's declared checks.

Registered as a `pytest11` entry point (auto-loaded wherever mlgate is installed) and passed with
`-p mlgate.modeltest.plugin` by `mlgate test-model`. Inert unless used: the fixtures load nothing
until a test asks for them, and mlgate.yaml is collected only when named on the command line:

    pytest mlgate.yaml tests/model --mlgate-candidate models:/m-0123
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlgate.config import LoadedConfig, Perturbation, load_config
from mlgate.errors import MlgateError
from mlgate.modeltest.checks import Check, CheckResult, Session, declared_checks, json_safe, promotion
from mlgate.modeltest.context import Holdout, ScoredModel

CONFIG_NAMES = ("mlgate.yaml", "mlgate.yml")
_SESSION = pytest.StashKey["Session | MlgateError"]()
_RESULTS = pytest.StashKey[list[CheckResult]]()
_TESTS = pytest.StashKey[list[dict[str, Any]]]()
_COLLECTED = pytest.StashKey[Path]()  # the mlgate.yaml named on the command line, if any
_WRITTEN = pytest.StashKey[bool]()  # the report was written early (a config error stopped the run)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlgate", "mlgate model tests")
    group.addoption("--mlgate-config", default=None, help="mlgate.yaml (default: mlgate.yaml in the rootdir)")
    group.addoption(
        "--mlgate-candidate",
        default=os.environ.get("MLGATE_CANDIDATE"),
        help="model URI of the candidate, e.g. models:/<model_id> or runs:/<run_id>/model (env MLGATE_CANDIDATE)",
    )
    group.addoption("--mlgate-report", default=None, help="write the checks' results as JSON to this file")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = []
    config.stash[_TESTS] = []
    config.pluginmanager.register(_Recorder(config), "mlgate-recorder")


def pytest_unconfigure(config: pytest.Config) -> None:
    # After the report is written (sessionfinish): the downloaded models go with the run.
    found = config.stash.get(_SESSION, None)
    if isinstance(found, Session):
        found.close()


def _config_path(config: pytest.Config) -> Path:
    """--mlgate-config, else the mlgate.yaml named on the command line, else the rootdir's."""
    given = config.getoption("mlgate_config")
    if given:
        return Path(given)
    return config.stash.get(_COLLECTED, None) or config.rootpath / "mlgate.yaml"


def _loaded(config: pytest.Config) -> LoadedConfig:
    return load_config(_config_path(config))


def session_of(config: pytest.Config) -> Session:
    """The shared Session (holdout and models, loaded once); an MlgateError is raised again on each use."""
    if _SESSION not in config.stash:
        candidate = config.getoption("mlgate_candidate")
        try:
            if not candidate:
                raise MlgateError(
                    "no candidate model given",
                    hint="pass --mlgate-candidate models:/<model_id> (or set MLGATE_CANDIDATE)",
                )
            config.stash[_SESSION] = Session(_loaded(config), candidate)
        except MlgateError as exc:
            config.stash[_SESSION] = exc
    found = config.stash[_SESSION]
    if isinstance(found, MlgateError):
        raise found
    return found


class CheckFailed(Exception):
    """A declared check ran and did not pass (a test failure, not an error)."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.message)
        self.result = result


class DeclaredCheck(pytest.Item):
    """One check of mlgate.yaml's model_tests, run as a test so it lands in JUnit XML with the others."""

    def __init__(self, *, check: Check, line: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.line = line

    def runtest(self) -> None:
        started = time.perf_counter()
        result = self.check.run(session_of(self.config))
        self.user_properties.append(("seconds", round(time.perf_counter() - started, 4)))
        self.config.stash[_RESULTS].append(result)
        if result.outcome == "skipped":
            pytest.skip(result.message)
        if result.outcome == "failed":
            raise CheckFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CheckFailed):
            result = excinfo.value.result
            lines = [f"{self.check.id} ({result.name}) failed: {result.message}", f"  required: {result.bound}"]
            if result.cases:
                lines.append("  first failing cases:")
                lines += [f"    {json.dumps(case, default=str)}" for case in result.cases]
            return "\n".join(lines)
        if isinstance(excinfo.value, MlgateError):
            return f"{excinfo.value.message}\n  hint: {excinfo.value.hint}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, (self.line - 1) if self.line else None, f"{self.path.name}: {self.check.id}"


class DeclaredChecks(pytest.File):
    def collect(self) -> Iterator[DeclaredCheck]:
        loaded = load_config(self.path)
        for check in declared_checks(loaded):
            yield DeclaredCheck.from_parent(self, name=check.id, check=check, line=loaded.line_of(*check.where))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> DeclaredChecks | None:
    # Only when named on the command line: a project's mlgate.yaml is never collected by accident. A config
    # under another name (two models side by side: mlgate-churn.yaml) is collected when it is --mlgate-config.
    given = parent.config.getoption("mlgate_config")
    if file_path.name not in CONFIG_NAMES and not (given and file_path.resolve() == Path(given).resolve()):
        return None
    named = {Path(arg.split("::")[0]).resolve() for arg in parent.config.args}
    if file_path.resolve() not in named:
        return None
    # Its checks and the session's holdout and models must come from the same file.
    parent.config.stash[_COLLECTED] = file_path
    found: DeclaredChecks = DeclaredChecks.from_parent(parent, path=file_path)
    return found


def pytest_collection_finish(session: pytest.Session) -> None:
    """Load models and holdout before the first check, so a bad config stops the run with one clear error."""
    # With --mlgate-report (how `mlgate test-model` runs) the report needs the session even when
    # only the project's own tests run and none of them asked for a fixture.
    wanted = session.config.getoption("mlgate_report") and session.config.getoption("mlgate_candidate")
    if any(isinstance(item, DeclaredCheck) for item in session.items) or (wanted and session.items):
        try:
            session_of(session.config)
        except MlgateError as exc:
            _write_report(session.config, error=exc)
            if session.config.getoption("mlgate_report"):
                # `mlgate test-model` reads the error from the report and prints it once, with its exit code.
                raise pytest.UsageError("mlgate: stopped before the first check (the error follows)") from None
            raise pytest.UsageError(f"mlgate: {exc.message}\nhint: {exc.hint}") from None


class _Recorder:
    """Keeps every test's outcome (the user's tests and the declared checks) for the JSON report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and report.outcome == "passed":
            return
        message = ""
        if report.failed:
            message = str(report.longrepr)[-2000:]
        elif report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])
        entry = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome, "message": message,
                 "seconds": round(report.duration, 4)}  # fmt: skip
        self.config.stash[_TESTS].append(entry)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.config.stash.get(_WRITTEN, False):
            _write_report(self.config, exitstatus=int(exitstatus))


def _write_report(config: pytest.Config, *, error: MlgateError | None = None, exitstatus: int | None = None) -> None:
    target = config.getoption("mlgate_report")
    if not target:
        return
    report: dict[str, Any] = {"version": 1, "error": None, "exitstatus": exitstatus}
    if error is not None:
        report["error"] = {"message": error.message, "hint": error.hint, "file": error.file, "line": error.line,
                           "kind": type(error).__name__}  # fmt: skip
        config.stash[_WRITTEN] = True
    found = config.stash.get(_SESSION, None)
    if isinstance(found, Session):
        tests = config.stash[_TESTS]
        passed = exitstatus == 0 and not any(t["outcome"] == "failed" for t in tests)
        promotable, why = promotion(found, passed)
        report.update(
            {
                "holdout": {"source": found.holdout.source, "rows": found.holdout.rows},
                "candidate": _model_json(found.candidate, found.candidate_metrics),
                "champion": _model_json(found.champion, found.champion_metrics) if found.champion else None,
                "baseline": found.baseline_name,
                "checks": [result.to_json() for result in config.stash[_RESULTS]],
                "tests": tests,
                "passed": passed,
                "promotable": promotable,
                "promotion": why,
            }
        )
    Path(target).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


def _model_json(model: ScoredModel, values: dict[str, float] | None) -> dict[str, Any]:
    return {
        "uri": model.uri,
        "version": model.version,
        "threshold": model.threshold,
        "metrics": json_safe(values or {}),
    }


# Fixtures for a project's own model tests.


@pytest.fixture(scope="session")
def mlgate_session(request: pytest.FixtureRequest) -> Session:
    """The loaded holdout, candidate and champion (the same objects the declared checks use)."""
    if not request.config.getoption("mlgate_candidate"):
        # A plain `pytest` run of the project's tests: model tests need a model. `mlgate test-model`
        # always passes one, so under the gate this never skips.
        pytest.skip("no candidate model: pass --mlgate-candidate models:/<model_id> (mlgate test-model does)")
    try:
        return session_of(request.config)
    except MlgateError as exc:
        pytest.fail(f"mlgate: {exc.message} (hint: {exc.hint})", pytrace=False)


@pytest.fixture(scope="session")
def candidate_model(mlgate_session: Session) -> ScoredModel:
    """The model under test: `.scores(frame)`, `.pyfunc`, `.threshold`, `.uri`."""
    return mlgate_session.candidate


@pytest.fixture(scope="session")
def champion_model(mlgate_session: Session) -> ScoredModel:
    """The production model (`model_tests.baseline`); the test is skipped while there is none."""
    if mlgate_session.champion is None:
        reason = (
            f"{mlgate_session.baseline_name} does not exist yet"
            if mlgate_session.baseline_name
            else ("model_tests.baseline is not configured")
        )
        pytest.skip(f"no champion: {reason}")
    return mlgate_session.champion


@pytest.fixture(scope="session")
def holdout(mlgate_session: Session) -> pd.DataFrame:
    """The holdout frame (features and label), as the declared checks see it."""
    return mlgate_session.holdout.frame


@pytest.fixture(scope="session")
def holdout_labels(mlgate_session: Session) -> np.ndarray:
    return mlgate_session.holdout.labels


@pytest.fixture
def predict() -> Callable[[ScoredModel, pd.DataFrame], np.ndarray]:
    """predict(model, frame) -> positive-class scores, one float per row."""

    def scores(model: ScoredModel, frame: pd.DataFrame) -> np.ndarray:
        return model.scores(frame)

    return scores


@pytest.fixture
def perturb(mlgate_session: Session) -> Callable[..., pd.DataFrame]:
    """perturb(frame, column, add=/scale=/set=/replace=/shuffle=True, clip=False) -> a changed copy.

    The same rules as the declared checks: the result must stay valid data (data.expectations).
    """

    def change(frame: pd.DataFrame, column: str, **how: Any) -> pd.DataFrame:
        from mlgate.modeltest.context import perturb as apply

        return apply(mlgate_session.loaded, frame, column, Perturbation(**how), ("model_tests",))

    return change


__all__ = ["CheckFailed", "DeclaredCheck", "Holdout", "ScoredModel", "session_of"]
