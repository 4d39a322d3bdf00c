"""setup/setup.sh, the root action's two phases, run as the action runs them (GITHUB_ACTION_PATH, GITHUB_OUTPUT):
a venv the runner already has is reported present (the action then skips the cache restore), mlgate is
reinstalled only when its source changed, and an empty `extras` input means the core alone.

One real venv with the core extra (seven packages from the lock, hash-checked) is built for the module."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines() if "=" in line)


class Action:
    """A copy of the action's own files (so a test may change its source) and a private venv root."""

    def __init__(self, root: Path) -> None:
        self.path = root / "action"
        self.path.mkdir()
        for name in ("setup", "scripts"):
            shutil.copytree(ROOT / name, self.path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy2(ROOT / "pyproject.toml", self.path / "pyproject.toml")
        self.venvs = root / "tool-cache"
        self.out = root / "github_output"

    def run(self, phase: str, extras: str = "") -> dict[str, str]:
        self.out.write_text("", encoding="utf-8")
        env = {
            **os.environ,
            "GITHUB_ACTION_PATH": str(self.path),
            "GITHUB_OUTPUT": str(self.out),
            "MLGATE_VENV_ROOT": str(self.venvs),
            "MLGATE_SETUP_EXTRAS": extras,
        }
        env.pop("GITHUB_PATH", None)
        done = subprocess.run(
            ["bash", str(self.path / "setup" / "setup.sh"), phase],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return _outputs(self.out)


@pytest.fixture(scope="module")
def action(tmp_path_factory: pytest.TempPathFactory) -> Action:
    return Action(tmp_path_factory.mktemp("setup-sh"))


def test_empty_extras_is_the_core_and_a_built_venv_is_present_the_next_time(action: Action) -> None:
    before = action.run("key")
    assert "-core-" in before["key"] and before["venv"].endswith(before["key"])
    assert before["present"] == "false" and before["use-cache"] == "true"

    installed = action.run("install")
    assert installed["installed"] == "true"
    venv = Path(before["venv"])
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"mlgate", "pydantic", "pyyaml"} <= names
    assert not names & {"mypy", "ruff", "great-expectations", "dvc"}, "an empty extras input installed extras"
    # pip installs without compiling; compileall then writes the same .pyc files on every core.
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert any((site / "yaml" / "__pycache__").glob("__init__.cpython-*.pyc"))
    assert any((site / "pydantic" / "__pycache__").glob("main.cpython-*.pyc"))

    assert action.run("key")["present"] == "true"


def test_mlgate_is_reinstalled_only_when_its_source_changed(action: Action) -> None:
    venv = Path(action.run("key")["venv"])
    if not (venv / ".mlgate-source").is_file():
        action.run("install")
    installed_cli = next((venv / "lib").glob("python3*/site-packages/mlgate/cli.py"))
    # A reinstall writes the package's files anew (a new inode and mtime); none while the source is unchanged.
    before = installed_cli.stat()

    again = action.run("install")
    after = installed_cli.stat()
    assert again["installed"] == "false"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "reinstalled an unchanged source"

    source_cli = action.path / "scripts" / "mlgate" / "cli.py"
    source_cli.write_text(source_cli.read_text(encoding="utf-8") + "\n# changed by the test\n", encoding="utf-8")
    action.run("install")
    reinstalled = installed_cli.read_text(encoding="utf-8")
    assert reinstalled.endswith("# changed by the test\n"), "a changed source was not reinstalled"
