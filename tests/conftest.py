"""Fixtures every test module shares."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

# MLflow's setters write these too, "so that subprocess can inherit it": a module's URI outlives it there.
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True, scope="module")
def _mlflow_globals_restored() -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs, and their environment variables, as before each module.

    A module that sets them (to a store it then deletes) must not leave the next one, or the processes the next
    one starts, talking to it; and a "restore" through the public setters would pin the registry URI that was
    only a default before (and export it to every child process).
    """
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    before = (getattr(tracking, "_tracking_uri", None), getattr(registry, "_registry_uri", None))
    environment = {key: os.environ.get(key) for key in URI_ENV}
    yield
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    if tracking is not None:
        tracking._tracking_uri = before[0]  # type: ignore[attr-defined]
    if registry is not None:
        registry._registry_uri = before[1]  # type: ignore[attr-defined]
    for key, value in environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
