"""The lint gate: run ruff check, ruff format --check and mypy, and collect their findings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlgate.errors import InputError, ToolError


@dataclass(frozen=True)
class Finding:
    tool: str
    file: str
    line: int
    column: int
    code: str
    message: str


@dataclass
class ToolRun:
    tool: str
    command: list[str]
    findings: list[Finding] = field(default_factory=list)
    exit_code: int = 0


@dataclass
class LintReport:
    runs: list[ToolRun]

    @property
    def findings(self) -> list[Finding]:
        return [finding for run in self.runs for finding in run.findings]

    @property
    def passed(self) -> bool:
        return not self.findings


def _tool(name: str) -> str:
    """The tool next to this interpreter (mlgate's own venv) first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ToolError(
            f"{name} is not installed",
            hint="install the lint extra: pip install 'mlgate[lint]' (the setup action does this)",
        )
    return found


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def _ruff(args: list[str], label: str, paths: list[str], root: Path) -> ToolRun:
    command = [_tool("ruff"), *args, "--output-format", "json", *paths]
    done = _run(command, root)
    run = ToolRun(tool=label, command=command, exit_code=done.returncode)
    if done.returncode not in (0, 1):
        raise ToolError(f"{label} failed to run: {done.stderr.strip()[-800:]}", hint="check the paths and ruff config")
    for item in json.loads(done.stdout or "[]"):
        location = item.get("location") or {}
        run.findings.append(
            Finding(
                tool=label,
                file=_relative(item["filename"], root),
                line=int(location.get("row") or 1),
                column=int(location.get("column") or 1),
                code=str(item.get("code") or ""),
                message=str(item.get("message") or ""),
            )
        )
    return run


def _mypy(paths: list[str], strict: bool, root: Path, python: Path | None, cache_dir: Path | None) -> ToolRun:
    # --python-executable: mypy resolves third-party imports in the project's venv, not mlgate's.
    target = ["--python-executable", str(python)] if python else []
    cache = ["--cache-dir", str(cache_dir)] if cache_dir else []
    options = [*target, *cache, *(["--strict"] if strict else [])]
    command = [_tool("mypy"), "-O", "json", "--no-error-summary", *options, *paths]
    done = _run(command, root)
    run = ToolRun(tool="mypy", command=command, exit_code=done.returncode)
    parsed_any = False
    for text in done.stdout.splitlines():
        if not text.startswith("{"):
            continue
        item = json.loads(text)
        parsed_any = True
        if item.get("severity") != "error":
            continue
        code = item.get("code") or ""
        run.findings.append(
            Finding(
                tool="mypy",
                file=_relative(str(item["file"]), root),
                line=int(item.get("line") or 1),
                column=int(item.get("column") or 0) + 1,
                code=str(code),
                message=str(item.get("message") or ""),
            )
        )
    # Exit 2 is mypy's own crash or usage error; a non-zero exit without any finding is the same.
    if done.returncode == 2 or (done.returncode != 0 and not parsed_any):
        raise ToolError(
            f"mypy failed to run: {(done.stderr or done.stdout).strip()[-800:]}",
            hint="check the mypy configuration of the project",
        )
    return run


def run_lint(
    root: Path,
    paths: list[str],
    *,
    ruff: bool = True,
    format_check: bool = True,
    mypy: bool = True,
    strict: bool = False,
    python: Path | None = None,
    mypy_cache: Path | None = None,
) -> LintReport:
    """Run the enabled linters over `paths` (relative to `root`) and return every finding. mypy reads the
    project's imports from the venv of `python` and keeps its cache in `mypy_cache` (its default when None)."""
    for path in paths:
        if not (root / path).exists():
            raise InputError(
                f"lint path {path!r} does not exist under {root}",
                hint="fix lint.paths in mlgate.yaml or the `paths` input",
            )
    runs: list[ToolRun] = []
    if ruff:
        runs.append(_ruff(["check", "--no-fix"], "ruff", paths, root))
    if format_check:
        runs.append(_ruff(["format", "--check"], "ruff format", paths, root))
    if mypy:
        runs.append(_mypy(paths, strict, root, python, mypy_cache))
    return LintReport(runs=runs)
