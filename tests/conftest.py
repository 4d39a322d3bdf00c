"""Fixtures every test module shares."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

# MLflow's setters write these too, "so that subprocess can inherit it": a module's URI outlives it there.
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
# End-to-end modules that may run on a worker of their own, beside the others (pytest_xdist_make_scheduler).
OWN_WORKBENCH = frozenset({"tests/e2e/test_sklearn_project.py"})


@pytest.fixture(autouse=True, scope="module")
def _mlflow_globals_restored() -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs, its active experiment (`mlflow.set_experiment`), and their
    environment variables, as before each module: a module's experiment id means nothing in the next one's store.

    A module that sets them (to a store it then deletes) must not leave the next one, or the processes the next
    one starts, talking to it; and a "restore" through the public setters would pin the registry URI that was
    only a default before (and export it to every child process).
    """
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    fluent = sys.modules.get("mlflow.tracking.fluent")
    before = (getattr(tracking, "_tracking_uri", None), getattr(registry, "_registry_uri", None))
    experiment = getattr(fluent, "_active_experiment_id", None)
    environment = {key: os.environ.get(key) for key in URI_ENV}
    yield
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:
        fluent._active_experiment_id = experiment  # type: ignore[attr-defined]
    if tracking is not None:
        tracking._tracking_uri = before[0]  # type: ignore[attr-defined]
    if registry is not None:
        registry._registry_uri = before[1]  # type: ignore[attr-defined]
    for key, value in environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs two workers (pytest-xdist). Each worker gets whole modules, so a module's shared servers
    and fixtures start once. The end-to-end tests of the example project go to one worker, in collection order
    (tests/e2e comes first): they share one workbench (the exported checkout, the runner's tool cache with the
    venvs built once, torch's included) and one MLflow server, and take about as long as all the other tests
    together. The scikit-learn project's (no torch, no DVC: a small cold start of its own) is a unit of its own,
    which the other worker takes beside the unit and static tests.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndEndToEnd(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.startswith("tests/e2e/") and path not in OWN_WORKBENCH:
                return "tests/e2e"
            return path

    config.option.loadscopereorder = False  # collection order: the end-to-end unit, the longest, starts first
    return ModulesAndEndToEnd(config, log)
