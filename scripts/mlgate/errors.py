"""One exception hierarchy for every expected failure, with its exit code and fix hint."""

from __future__ import annotations


class MlgateError(Exception):
    """An expected failure: reported as one message and a hint, never as a traceback."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = file
        self.line = line


class ConfigError(MlgateError):
    """`mlgate.yaml` is missing, unreadable, or does not match the schema."""

    exit_code = 2


class InputError(MlgateError):
    """A file, column or argument the gate was given is missing or malformed."""

    exit_code = 3


class GateFailed(MlgateError):
    """The gate ran and the thing it checks did not pass (lint errors, failed expectations, drift)."""

    exit_code = 1


class ToolError(MlgateError):
    """An external tool the gate drives (ruff, mypy, dvc, a server) failed to run."""

    exit_code = 4
