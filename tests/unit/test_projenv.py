"""The project venv: built from environment.install, reused while nothing it depends on changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlgate import projenv
from mlgate.config import load_config
from mlgate.errors import ToolError


def _project(tmp_path: Path, install: str) -> Path:
    (tmp_path / "mlgate.yaml").write_text(f"version: 1\nproject: demo\nenvironment:\n  install: {install}\n")
    return tmp_path / "mlgate.yaml"


def test_no_install_means_no_venv(tmp_path: Path) -> None:
    (tmp_path / "mlgate.yaml").write_text("version: 1\nproject: demo\n")
    assert projenv.ensure_project_env(load_config(tmp_path / "mlgate.yaml")) is None


def test_venv_built_once_then_reused_until_requirements_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGATE_VENV_ROOT", str(tmp_path / "venvs"))
    (tmp_path / "requirements.txt").write_text("# nothing to install\n")
    config = _project(tmp_path, "[-r, requirements.txt]")
    python = projenv.ensure_project_env(load_config(config))
    assert python is not None and python.is_file()
    marker = python.parent.parent / projenv.MARKER
    built_at = marker.stat().st_mtime_ns
    assert projenv.ensure_project_env(load_config(config)) == python
    assert marker.stat().st_mtime_ns == built_at  # reused, not rebuilt

    (tmp_path / "requirements.txt").write_text("# changed\n")
    assert projenv.ensure_project_env(load_config(config)) != python


def test_failing_install_names_the_key_and_leaves_no_half_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGATE_VENV_ROOT", str(tmp_path / "venvs"))
    config = _project(tmp_path, "[./no-such-project-dir]")
    with pytest.raises(ToolError) as caught:
        projenv.ensure_project_env(load_config(config))
    assert "environment.install" in caught.value.message
    assert caught.value.line == 4
    assert not [p for p in (tmp_path / "venvs").iterdir() if p.is_dir()]


def test_missing_constraints_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "mlgate.yaml").write_text(
        "version: 1\nproject: demo\nenvironment:\n  install: [numpy]\n  constraints: pins.txt\n"
    )
    with pytest.raises(ToolError, match=r"pins\.txt"):
        projenv.ensure_project_env(load_config(tmp_path / "mlgate.yaml"))
