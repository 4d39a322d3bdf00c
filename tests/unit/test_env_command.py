"""`mlgate env key|ensure`, what actions/project-env runs: the project venv's path and cache key, whether the
cache may be used (never on tag and release events), and a venv restored broken is built again, never used."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from mlgate import projenv
from mlgate.config import load_config

MLGATE = Path(sys.executable).parent / "mlgate"


def env_command(root: Path, *argv: str, **environ: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    outputs = root / "outputs.txt"
    outputs.write_text("")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GITHUB_", "MLGATE_INPUT_"))}
    env |= {"GITHUB_OUTPUT": str(outputs), "MLGATE_VENV_ROOT": str(root / "venvs"), **environ}
    done = subprocess.run(
        [str(MLGATE), "env", *argv, "--config", str(root / "mlgate.yaml")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    lines = outputs.read_text().splitlines()  # name<<delimiter, the value, delimiter (one-line values here)
    return done, {line.split("<<")[0]: lines[i + 1] for i, line in enumerate(lines) if "<<ghadelimiter_" in line}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("env")
    (root / "requirements.txt").write_text("# nothing but mlgate's own\n")
    # The project's own package, installed editable from the checkout; it needs tzdata (pandas brings it).
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "demo-proj"\nversion = "0.1"\n[tool.setuptools]\npackages = ["demo_proj"]\n'
    )
    (root / "demo_proj").mkdir()
    (root / "demo_proj" / "__init__.py").write_text("import tzdata  # noqa: F401\n")
    (root / "mlgate.yaml").write_text(
        'version: 1\nproject: demo\nenvironment:\n  install: [-r, requirements.txt, -e, "."]\n'
    )
    return root


def test_key_names_the_path_and_a_key_that_follows_the_files_and_the_runner(project: Path) -> None:
    done, found = env_command(project, "key", RUNNER_OS="Linux", RUNNER_ARCH="X64")
    assert done.returncode == 0, done.stderr
    loaded = load_config(project / "mlgate.yaml")
    assert found["needed"] == "true" and found["use-cache"] == "true" and found["present"] == "false"
    assert found["path"] == str(project / "venvs" / projenv.env_key(loaded))
    assert found["key"] == f"mlgate-Linux-X64-{projenv.env_key(loaded)}"
    # mypy's cache (actions/lint) sits in the venv's folder, under a key of its own: the venv's and mypy's version.
    assert found["mypy-cache-path"] == str(Path(found["path"]) / projenv.MYPY_CACHE)
    assert found["mypy-cache-key"] == f"{found['key']}-mypy-{metadata.version('mypy')}"
    _, other_runner = env_command(project, "key", RUNNER_OS="macOS", RUNNER_ARCH="ARM64")
    assert other_runner["key"] != found["key"] and other_runner["path"] == found["path"]
    (project / "requirements.txt").write_text("# changed\n")
    try:
        _, changed = env_command(project, "key", RUNNER_OS="Linux", RUNNER_ARCH="X64")
    finally:
        (project / "requirements.txt").write_text("# nothing but mlgate's own\n")
    assert changed["key"] != found["key"]


@pytest.mark.parametrize(
    ("environ", "argv", "expected"),
    [
        ({"GITHUB_REF_TYPE": "tag"}, [], "false"),
        ({"GITHUB_EVENT_NAME": "release"}, [], "false"),
        ({"GITHUB_EVENT_NAME": "pull_request", "GITHUB_REF_TYPE": "branch"}, [], "true"),
        ({"GITHUB_REF_TYPE": "tag"}, ["--cache", "true"], "true"),
        ({}, ["--cache", "false"], "false"),
    ],
)
def test_the_cache_is_never_used_for_tags_and_releases_unless_asked(
    project: Path, environ: dict[str, str], argv: list[str], expected: str
) -> None:
    done, found = env_command(project, "key", *argv, **environ)
    assert done.returncode == 0, done.stderr
    assert found["use-cache"] == expected


def test_a_bad_cache_choice_and_no_operation_are_one_error_each(project: Path) -> None:
    done, _ = env_command(project, "key", "--cache", "maybe")
    assert done.returncode == 3 and "--cache 'maybe' is not one of auto, true, false" in done.stdout + done.stderr
    done, _ = env_command(project)
    assert done.returncode == 3 and "no env operation given" in done.stdout + done.stderr


def test_ensure_builds_once_then_finds_it_and_rebuilds_a_broken_one(project: Path) -> None:
    done, built = env_command(project, "ensure")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert built["built"] == "true" and Path(built["python"]).is_file()
    libraries = next((Path(built["python"]).parent.parent / "lib").glob("python3*/site-packages"))
    assert any((libraries / "pandas" / "__pycache__").glob("__init__.cpython-*.pyc")), "not byte-compiled"
    _, again = env_command(project, "key")
    assert again["present"] == "true"  # a self-hosted runner's tool cache: nothing to restore
    done, checked = env_command(project, "ensure")
    assert checked["built"] == "false" and "ready (there, checked)" in done.stdout
    # Half a venv, as a cache entry cut short would restore it: a library of its own is gone.
    site = next((Path(built["python"]).parent.parent / "lib").glob("python3*/site-packages"))
    for folder in site.glob("yaml"):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    done, trusted = env_command(project, "ensure", "--no-check")
    assert trusted["built"] == "false" and "ready (there)" in done.stdout  # as a runner's own tool cache is trusted
    done, rebuilt = env_command(project, "ensure")  # as one just restored from a cache is checked
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert rebuilt["built"] == "true"
    assert "is broken (it does not import its own libraries" in done.stdout and "No module named 'yaml'" in done.stdout
    # The libraries every project venv holds are there, but one the project itself imports is gone: the
    # project's own import (demo_proj) finds it.
    site = next((Path(rebuilt["python"]).parent.parent / "lib").glob("python3*/site-packages"))
    for folder in site.glob("tzdata"):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    done, again = env_command(project, "ensure")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "does not import the project (demo-proj): ModuleNotFoundError: No module named 'tzdata'" in done.stdout
    assert again["built"] == "true"
    done, fine = env_command(project, "ensure")
    assert fine["built"] == "false" and "ready (there, checked)" in done.stdout
    assert subprocess.run([rebuilt["python"], "-c", "import yaml"], check=False).returncode == 0


def test_no_environment_install_needs_no_venv(tmp_path: Path) -> None:
    (tmp_path / "mlgate.yaml").write_text("version: 1\nproject: demo\n")
    _, key = env_command(tmp_path, "key")
    assert key == {"needed": "false", "path": "", "key": "", "use-cache": "false", "present": "false"} | {
        "mypy-cache-path": "",
        "mypy-cache-key": "",
    }
    done, ensured = env_command(tmp_path, "ensure")
    assert done.returncode == 0 and ensured == {"built": "false", "python": ""}
