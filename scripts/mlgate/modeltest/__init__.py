"""The model-test gate: run mlgate.yaml's declared checks and the project's own model tests under pytest.

The checks load the candidate and the champion with the project's own libraries (torch, sklearn,
...), so pytest runs in the project venv with mlgate's plugin; this side only prepares that run
and reads back its JSON report and JUnit XML. Imports nothing heavy: it runs in mlgate's venv.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgate.config import LoadedConfig
from mlgate.dvcio import pulling
from mlgate.errors import ConfigError, GateFailed, InputError, MlgateError, ToolError
from mlgate.extras import require
from mlgate.mlflowio import child_env, reach
from mlgate.modeltest.settings import settings_of
from mlgate.procio import stream
from mlgate.projenv import ensure_project_env

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the folder holding the `mlgate` package
PLUGIN = "mlgate.modeltest.plugin"
_ERRORS: dict[str, type[MlgateError]] = {cls.__name__: cls for cls in (ConfigError, InputError, ToolError)}


@dataclass
class ModelTestReport:
    """What the pytest run in the project venv found, read from the plugin's JSON report."""

    raw: dict[str, Any]
    exit_code: int
    junit_path: Path
    log_tail: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.raw.get("passed")) and self.exit_code == 0

    @property
    def promotable(self) -> bool:
        return bool(self.raw.get("promotable")) and self.passed

    @property
    def checks(self) -> list[dict[str, Any]]:
        return list(self.raw.get("checks") or [])

    @property
    def tests(self) -> list[dict[str, Any]]:
        return list(self.raw.get("tests") or [])

    @property
    def user_failures(self) -> list[dict[str, Any]]:
        """Failed or errored tests that are not declared checks (the project's own model tests)."""
        return [t for t in self.tests if t["outcome"] == "failed" and "::" in t["nodeid"] and not is_declared_check(t)]

    @property
    def errored_checks(self) -> list[dict[str, Any]]:
        """Declared checks that raised instead of reporting (e.g. the model's predict failed on the rows)."""
        reported = {check["id"] for check in self.checks}
        return [
            t for t in self.tests
            if t["outcome"] == "failed" and is_declared_check(t) and t["nodeid"].split("::")[-1] not in reported
        ]  # fmt: skip

    def metrics(self, which: str) -> dict[str, float | None]:
        model = self.raw.get(which) or {}
        return dict(model.get("metrics") or {})

    def evidence(self) -> dict[str, object]:
        """What `mlgate registry register` records of these tests on the version (and promote judges by)."""
        champion = self.raw.get("champion") or {}
        return {
            "passed": self.passed,
            "promotable": self.promotable,
            "metrics": {"candidate": self.metrics("candidate"), "champion": self.metrics("champion") or None},
            "champion_version": str(champion.get("version") or ""),
        }


def is_declared_check(test: dict[str, Any]) -> bool:
    return str(test["nodeid"]).split("::")[0].endswith(("mlgate.yaml", "mlgate.yml"))


def _user_test_paths(loaded: LoadedConfig) -> list[str]:
    assert loaded.model.model_tests is not None
    paths = []
    for index, path in enumerate(loaded.model.model_tests.tests):
        if not (loaded.root / path).exists():
            raise ConfigError(
                f"{loaded.path}: model_tests.tests[{index}] names {path!r}, which does not exist under {loaded.root}",
                hint="name a test file or folder of the project, or remove it from model_tests.tests",
                file=str(loaded.path),
                line=loaded.line_of("model_tests", "tests", index) or loaded.line_of("model_tests", "tests"),
            )
        paths.append(path)
    return paths


def project_process_env(python: Path | None, tracking_uri: str) -> dict[str, str]:
    """The environment of a process mlgate runs in the project venv (`python`; None: mlgate's own venv), with
    mlgate's package importable and MLflow pointed at `tracking_uri` (bounded retries, telemetry off)."""
    env = dict(os.environ)
    if python is not None:
        env["VIRTUAL_ENV"] = str(python.parent.parent)
        env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download is noise in a CI log
    return child_env(env)


def run_model_tests(
    loaded: LoadedConfig,
    *,
    candidate_uri: str,
    tracking_uri: str,
    junit_path: Path,
    pull_data: bool = True,
    dvc_remote_url: str | None = None,
    extra_pytest_args: list[str] | None = None,
) -> ModelTestReport:
    """Run the declared checks and the project's model tests against `candidate_uri`; never raises GateFailed."""
    settings = settings_of(loaded)
    tests = _user_test_paths(loaded)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    # A tracking URI MLflow cannot open, or a server that does not answer, fails here within a bounded
    # number of attempts (MLGATE_MLFLOW_ATTEMPTS), not after the project venv is built or minutes of MLflow's
    # own retries while the models load.
    # The holdout comes down (another process) while MLflow and the venv are set up; either failing stops it.
    with pulling(loaded, [settings.holdout], dvc_remote_url, enabled=pull_data):
        reach(tracking_uri)
        timings["mlflow"] = time.perf_counter() - started
        started = time.perf_counter()
        python = ensure_project_env(loaded)
        timings["project_env"] = time.perf_counter() - started
        if python is None:
            # Without a project venv, pytest and the plugin's libraries run in mlgate's own (the test-model extra).
            require("pytest", "pandas", "numpy")
        started = time.perf_counter()
    timings["dvc_pull"] = time.perf_counter() - started  # what the pull took beyond the set-up it overlapped
    env = project_process_env(python, tracking_uri)
    env.pop("MLGATE_CANDIDATE", None)
    junit_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlgate-test-model-") as tmp:
        report_path = Path(tmp) / "report.json"
        # Whatever the run leaves in its temporary folder (a model MLflow downloaded, pytest's basetemp)
        # goes with this folder.
        env["TMPDIR"] = str(Path(tmp) / "tmp")
        Path(env["TMPDIR"]).mkdir()
        command = [
            str(python or sys.executable), "-m", "pytest", "-p", PLUGIN, "-p", "no:cacheprovider",
            str(loaded.path.resolve()), *tests,
            f"--rootdir={loaded.root.resolve()}",
            f"--mlgate-config={loaded.path.resolve()}",
            f"--mlgate-candidate={candidate_uri}",
            f"--mlgate-report={report_path}",
            f"--junitxml={junit_path.resolve()}",
            "-o", "junit_suite_name=mlgate-model-tests",
            "-rfEs", "--tb=short", "--color=no",
            *(extra_pytest_args or []),
        ]  # fmt: skip
        started = time.perf_counter()
        code, tail, _ = stream(
            command, loaded.root, env, Path(tmp) / "pytest.log", what="python",
            hint="the project venv has no python; check environment.install",
        )  # fmt: skip
        timings["pytest"] = time.perf_counter() - started
        raw = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    if raw and raw.get("error"):
        error = raw["error"]
        cls = _ERRORS.get(error.get("kind", ""), ConfigError)
        raise cls(error["message"], hint=error.get("hint"), file=error.get("file"), line=error.get("line"))
    if raw is None or "checks" not in raw:
        if code == 5:
            raise ConfigError(
                f"{loaded.path}: model_tests declares no checks and model_tests.tests collected no tests",
                hint="declare performance, behavioral or baseline checks, or add test files to model_tests.tests",
                file=str(loaded.path),
                line=loaded.line_of("model_tests"),
            )
        raise ToolError(
            f"pytest in the project venv stopped with exit code {code} before reporting; last lines:\n"
            + "\n".join(tail[-15:]),
            hint="run the same tests locally: pytest mlgate.yaml " + " ".join(tests) + " --mlgate-candidate <uri>",
        )
    return ModelTestReport(raw=raw, exit_code=code, junit_path=junit_path, log_tail=tail, timings=timings)


__all__ = ["GateFailed", "ModelTestReport", "run_model_tests"]
