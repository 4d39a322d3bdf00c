"""The lint gate on a small project: clean code passes, each tool's finding fails with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlgate.cli import main
from mlgate.errors import InputError
from mlgate.lint import run_lint

CONFIG = "version: 1\nproject: p\nlint:\n  paths: [src]\n"


def project(tmp_path: Path, code: str) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mod.py").write_text(code)
    (tmp_path / "mlgate.yaml").write_text(CONFIG)
    return tmp_path


def test_clean_project_passes(tmp_path: Path) -> None:
    report = run_lint(project(tmp_path, "def f(x: int) -> int:\n    return x + 1\n"), ["src"])
    assert report.passed
    assert [run.tool for run in report.runs] == ["ruff", "ruff format", "mypy"]


def test_each_tool_reports_file_and_line(tmp_path: Path) -> None:
    code = "import os\ndef f(x: int) -> str:\n  return x\n"
    report = run_lint(project(tmp_path, code), ["src"])
    found = {(f.tool, f.code, f.file, f.line) for f in report.findings}
    assert ("ruff", "F401", "src/mod.py", 1) in found
    assert ("mypy", "return-value", "src/mod.py", 3) in found
    assert any(f.tool == "ruff format" and f.file == "src/mod.py" for f in report.findings)


def test_strict_mypy_only_when_asked(tmp_path: Path) -> None:
    root = project(tmp_path, "def f(x):\n    return x\n")
    assert not any(f.tool == "mypy" for f in run_lint(root, ["src"]).findings)
    strict = run_lint(root, ["src"], strict=True).findings
    assert any(f.tool == "mypy" and f.code == "no-untyped-def" for f in strict)


def test_mypy_keeps_its_cache_where_asked_and_finds_the_same_from_it(tmp_path: Path) -> None:
    root = project(tmp_path, "def f(x: int) -> str:\n    return x\n")
    cache = tmp_path / "venv" / ".mlgate-mypy-cache"
    first = run_lint(root, ["src"], ruff=False, format_check=False, mypy_cache=cache)
    assert "--cache-dir" in first.runs[0].command
    assert (cache / "CACHEDIR.TAG").is_file() and len(list(cache.rglob("*"))) > 2
    assert not (root / ".mypy_cache").exists()
    again = run_lint(root, ["src"], ruff=False, format_check=False, mypy_cache=cache)
    assert [(f.code, f.line) for f in again.findings] == [(f.code, f.line) for f in first.findings] != []


def test_missing_path_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'nope' does not exist"):
        run_lint(project(tmp_path, "x = 1\n"), ["nope"])


def test_cli_writes_annotations_summary_and_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path, "import os\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    assert main(["lint", "--config", str(root / "mlgate.yaml")]) == 1
    out = capsys.readouterr().out
    assert "::error file=src/mod.py,line=1,col=8,title=ruff::F401" in out
    summary = (tmp_path / "summary.md").read_text()
    assert "❌ lint failed" in summary and "F401" in summary
    assert "passed<<" in (tmp_path / "out").read_text() and "\nfalse\n" in (tmp_path / "out").read_text()
