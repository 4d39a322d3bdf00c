"""Shared fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlgate import redaction


@pytest.fixture(autouse=True)
def _empty_redaction_registry() -> Iterator[None]:
    # The registry lives as long as the process (one mlgate run); a test's secrets must not mask the next test's text.
    redaction.clear()
    yield
    redaction.clear()


@pytest.fixture(autouse=True, scope="module")
def _mlflow_globals_restored() -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs as they were before each module.

    A module that sets them (to a store it then deletes) must not leave the next one talking to it; and a
    "restore" through the public setters would pin the registry URI that was only a default before.
    """
    import sys

    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    before = (getattr(tracking, "_tracking_uri", None), getattr(registry, "_registry_uri", None))
    yield
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    if tracking is not None:
        tracking._tracking_uri = before[0]  # type: ignore[attr-defined]
    if registry is not None:
        registry._registry_uri = before[1]  # type: ignore[attr-defined]
