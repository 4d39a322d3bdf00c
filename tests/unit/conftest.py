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
