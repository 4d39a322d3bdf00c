"""The model_tests section of a loaded config, and errors that point at one of its keys.

Standard library and mlgate's core only: `mlgate test-model` imports it in mlgate's own venv, which
has no NumPy or pandas (those live in the project venv, where the checks run).
"""

from __future__ import annotations

from mlgate.config import LoadedConfig, ModelTestsConfig
from mlgate.errors import ConfigError


def settings_of(loaded: LoadedConfig) -> ModelTestsConfig:
    settings = loaded.model.model_tests
    if settings is None:
        raise ConfigError(
            f"{loaded.path}: no `model_tests` section; the model-test gate has nothing to check",
            hint="add model_tests.holdout and model_tests.label (and the checks) to mlgate.yaml, or turn the job "
            "off (ml-ci.yml input test-model: false)",
            file=str(loaded.path),
            line=1,
        )
    if settings.holdout not in loaded.model.data.sources:
        declared = ", ".join(sorted(loaded.model.data.sources)) or "none"
        raise ConfigError(
            f"{loaded.path}: model_tests.holdout names source {settings.holdout!r}, which is not declared "
            f"under data.sources (declared: {declared})",
            hint="name a source declared under data.sources, or declare the holdout file there",
            file=str(loaded.path),
            line=loaded.line_of("model_tests", "holdout"),
        )
    return settings


def config_error(loaded: LoadedConfig, where: tuple[str | int, ...], message: str, hint: str) -> ConfigError:
    """A ConfigError pointing at the mlgate.yaml line of the check `where` (e.g. model_tests.behavioral...)."""
    key = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in where).replace(".[", "[")
    return ConfigError(
        f"{loaded.path}:{loaded.line_of(*where) or 1}: {key}: {message}",
        hint=hint,
        file=str(loaded.path),
        line=loaded.line_of(*where),
    )
