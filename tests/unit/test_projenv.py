"""The project venv: built from environment.install, reused while nothing it depends on changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlgate import projenv
from mlgate.config import load_config
from mlgate.errors import ConfigError, ToolError


def _project(tmp_path: Path, install: str) -> Path:
    (tmp_path / "mlgate.yaml").write_text(f"version: 1\nproject: demo\nenvironment:\n  install: {install}\n")
    return tmp_path / "mlgate.yaml"


def test_no_install_means_no_venv(tmp_path: Path) -> None:
    (tmp_path / "mlgate.yaml").write_text("version: 1\nproject: demo\n")
    assert projenv.ensure_project_env(load_config(tmp_path / "mlgate.yaml")) is None


def test_venv_built_once_then_reused_until_requirements_change_with_the_configured_gates_libraries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A venv is built once per key; the libraries of the gates mlgate.yaml configures (compress) come with it, so
    the first job's cache holds them. Where they cannot be installed, the venv is still built (lint and train do
    not need them) and the compress gate meets the error itself."""
    import mlgate.extras

    monkeypatch.setenv("MLGATE_VENV_ROOT", str(tmp_path / "venvs"))
    (tmp_path / "requirements.txt").write_text("# nothing to install\n")
    config = _project(tmp_path, "[-r, requirements.txt]")
    with config.open("a") as handle:
        handle.write("model_tests: {holdout: h, label: y}\ncompress: {methods: [onnx]}\n")
    # Stand-ins for onnx and onnxruntime: a path that does not exist (pip fails at once), then one of the venv's
    # own libraries (pip succeeds, nothing downloaded).
    monkeypatch.setattr(mlgate.extras, "COMPRESS_BASE_LIBRARIES", ["./no-such-onnx"])
    python = projenv.ensure_project_env(load_config(config))
    assert python is not None and python.is_file()
    out = capsys.readouterr().out
    assert "warning: installing the compress gate's libraries (./no-such-onnx)" in out, out
    assert not list(python.parent.parent.glob(".mlgate-compress-*"))
    marker = python.parent.parent / projenv.MARKER
    built_at = marker.stat().st_mtime_ns
    assert projenv.ensure_project_env(load_config(config)) == python
    assert marker.stat().st_mtime_ns == built_at  # reused, not rebuilt

    monkeypatch.setattr(mlgate.extras, "COMPRESS_BASE_LIBRARIES", ["pytest>=8"])
    (tmp_path / "requirements.txt").write_text("# changed\n")
    rebuilt = projenv.ensure_project_env(load_config(config))
    assert rebuilt is not None and rebuilt != python
    assert "adding the compress gate's libraries to the project environment: pytest>=8" in capsys.readouterr().out
    assert len(list(rebuilt.parent.parent.glob(".mlgate-compress-*"))) == 1
    # The compress gate finds them there: nothing to add.
    projenv.ensure_gate_packages(load_config(config), rebuilt, ["pytest>=8"], "compress")
    assert "adding" not in capsys.readouterr().out


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
    with pytest.raises(
        ConfigError, match=r"environment\.constraints names 'pins\.txt', which does not exist"
    ) as caught:
        projenv.ensure_project_env(load_config(tmp_path / "mlgate.yaml"))
    assert caught.value.exit_code == 2 and caught.value.line == 5  # a config error, at the key's line


def _package(root: Path, marker: str) -> None:
    (root / "src" / "demo_pkg").mkdir(parents=True)
    (root / "src" / "demo_pkg" / "__init__.py").write_text(f"WHERE = {marker!r}\n")
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "demo-pkg"\nversion = "0.1"\n[tool.setuptools.packages.find]\nwhere = ["src"]\n'
    )
    (root / "mlgate.yaml").write_text("version: 1\nproject: demo\nenvironment:\n  install: [-e, .]\n")


def test_local_targets_finds_the_project_but_not_requirements(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    install = ["-e", ".[typing,train]", "-r", "requirements.txt", "./lib", "numpy>=2", "-c", "pins.txt"]
    assert projenv.local_targets(install, tmp_path) == [(True, ".[typing,train]"), (False, "./lib")]


def test_a_shared_venv_imports_each_checkouts_code_and_reinstalls_only_when_the_checkout_or_its_metadata_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two checkouts with the same dependencies share one cached venv (as two jobs on one runner do):
    # each must import its own code, not the code of the checkout that built the venv.
    monkeypatch.setenv("MLGATE_VENV_ROOT", str(tmp_path / "venvs"))
    first, second = tmp_path / "job-a", tmp_path / "job-b"
    _package(first, "a")
    _package(second, "b")
    python = projenv.ensure_project_env(load_config(first / "mlgate.yaml"))
    assert python == projenv.ensure_project_env(load_config(second / "mlgate.yaml"))  # one venv for both
    projenv.ensure_project_env(load_config(first / "mlgate.yaml"))
    pips: list[list[str]] = []
    real_run = subprocess.run

    def recording(command: list[str], *args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        if "pip" in command:
            pips.append(command)
        return real_run(command, *args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(projenv.subprocess, "run", recording)

    def imports(root: Path) -> str:
        python = projenv.ensure_project_env(load_config(root / "mlgate.yaml"))
        assert python is not None
        found = real_run([str(python), "-c", "import demo_pkg; print(demo_pkg.WHERE)"], capture_output=True, text=True)
        return found.stdout.strip()

    def installs(root: Path, expected: str) -> bool:
        """Whether bringing up the venv for `root` ran pip (one install may take two: without build isolation
        first), and that it imports `expected`."""
        before = len(pips)
        assert imports(root) == expected
        return len(pips) > before

    assert not installs(first, "a")  # the same checkout, nothing changed: no pip at all
    assert installs(second, "b")  # another checkout shares the venv: installed from it
    assert installs(first, "a")  # and back
    (first / "src" / "demo_pkg" / "__init__.py").write_text("WHERE = 'a, edited'\n")
    assert not installs(first, "a, edited")  # code is read from the checkout: nothing to do
    pyproject = first / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1"', 'version = "0.2"'))
    assert installs(first, "a, edited")  # new metadata: installed again
