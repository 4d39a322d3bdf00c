"""The layers of scripts/mlgate as a checked contract: `.importlinter`, run by import-linter's `lint-imports`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(config: Path) -> subprocess.CompletedProcess[str]:
    # --no-cache: the graph is built from the files as they are, not from a cache another checkout wrote.
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_package_keeps_its_layers() -> None:
    done = _lint(CONTRACT)
    assert done.returncode == 0, f"an import breaks the layers of .importlinter:\n{done.stdout}{done.stderr}"
    assert "0 broken" in done.stdout


def test_an_arrow_the_contract_does_not_allow_breaks_it(tmp_path: Path) -> None:
    """Without its allowed arrows the same contract fails, naming the import: the check sees real imports."""
    text = CONTRACT.read_text(encoding="utf-8")
    strict = tmp_path / "strict.importlinter"
    strict.write_text(text.split("ignore_imports =", 1)[0], encoding="utf-8")
    done = _lint(strict)
    assert done.returncode != 0
    assert "mlgate.rollout is not allowed to import mlgate.traffic" in done.stdout, done.stdout
    assert "mlgate.compress is not allowed to import mlgate.modeltest" in done.stdout, done.stdout


def test_every_allowed_arrow_is_one_the_package_has(tmp_path: Path) -> None:
    """An allowed arrow that no import uses any more is an error (import-linter's default), so the list of
    allowed arrows cannot outgrow the code."""
    text = CONTRACT.read_text(encoding="utf-8")
    stale = tmp_path / "stale.importlinter"
    stale.write_text(text.rstrip() + "\n    mlgate.lint -> mlgate.serve\n", encoding="utf-8")
    done = _lint(stale)
    assert done.returncode != 0
    assert "mlgate.lint -> mlgate.serve" in done.stdout + done.stderr


def _listed(contract: str) -> str:
    text = CONTRACT.read_text(encoding="utf-8")
    return text.split(f"[importlinter:contract:{contract}]", 1)[1].split("\n[", 1)[0]


def test_every_module_of_the_package_stands_in_a_layer() -> None:
    """A new gate or shared module is placed in the contract, or this fails: none goes unchecked."""
    package = ROOT / "scripts" / "mlgate"
    tops = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    tops |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    layers = _listed("layers").split("ignore_imports", 1)[0]
    placed = set(re.findall(r"\bmlgate\.([a-z_]+)", layers))
    assert sorted(tops - placed) == [], "add these to a layer of .importlinter"


def test_every_command_module_is_in_the_independence_contract() -> None:
    from mlgate.cli import COMMANDS

    listed = set(re.findall(r"mlgate\.commands\.([a-z_]+)", _listed("commands")))
    modules = {p.stem for p in (ROOT / "scripts" / "mlgate" / "commands").glob("*.py")} - {"__init__", "arguments"}
    assert listed == modules == {module for module, _ in COMMANDS.values()}
