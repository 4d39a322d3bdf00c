"""`make release` (python -m tools.release) on a throwaway repository: the plan, and each reason it refuses."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CHANGELOG = """\
# Changelog

## [Unreleased]

### Added
- Something not released yet.

## [{version}] - 2026-11-20

### Added
- The registry gate.

### Fixed
- A typo in a hint.

## [1.0.0] - 2026-10-01

### Added
- The first gates.

[Unreleased]: https://github.com/mlgate/mlgate/compare/v{version}...HEAD
[{version}]: https://github.com/mlgate/mlgate/compare/v1.0.0...v{version}
"""

ACTION = """\
name: lint
description: Lint a model project.
runs:
  using: composite
  steps:
    - run: echo lint
      shell: bash
"""

WORKFLOW = """\
on:
  workflow_call:
permissions: {{}}
jobs:
  lint:
    runs-on: ubuntu-latest
    steps:
      - uses: mlgate/mlgate/actions/lint@{self_ref}
"""


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.name=Release Test", "-c", "user.email=release@example.com", "-c", "commit.gpgsign=false"]
    done = subprocess.run(["git", *identity, *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


def make_repo(
    root: Path,
    *,
    version: str = "1.2.0",
    changelog_version: str | None = None,
    release_ref: str = "v1",
    self_ref: str | None = None,
) -> Path:
    """A repository with what the release checks read, committed, with a bare `origin` beside it."""
    files = {
        "CHANGELOG.md": CHANGELOG.format(version=changelog_version or version),
        "pyproject.toml": f'[project]\nname = "mlgate"\nversion = "{version}"\n',
        "scripts/mlgate/__init__.py": f'"""mlgate."""\n\nRELEASE_REF = "{release_ref}"\nREPOSITORY = "mlgate/mlgate"\n',
        "actions/lint/action.yml": ACTION,
        ".github/workflows/ml-ci.yml": WORKFLOW.format(self_ref=self_ref or release_ref),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "release candidate")
    remote = root.parent / "origin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    git(root, "remote", "add", "origin", str(remote))
    return root


@dataclass
class Result:
    code: int
    out: str
    err: str


def release(root: Path, *args: str) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "tools.release", "--root", str(root), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "mlgate")


def test_dry_run_prints_the_plan_and_tags_nothing(repo: Path) -> None:
    result = release(repo, "plan", "1.2.0")
    assert result.code == 0, result.err
    assert result.err == ""
    assert "mlgate release v1.2.0 (dry run; APPLY=1 tags and pushes)" in result.out
    for passed in (
        "CHANGELOG.md has `## [1.2.0]` with its notes",
        "pyproject.toml's version is 1.2.0",
        "mlgate.RELEASE_REF is v1, the major of v1.2.0",
        "every `mlgate/mlgate/...@` self-reference names mlgate.RELEASE_REF",
        "the working tree is clean",
    ):
        assert f"ok       {passed}" in result.out
    assert re.search(r"would run \(tags [0-9a-f]{7,}\):", result.out)
    assert '  git tag -a v1.2.0 -m "mlgate v1.2.0"\n  git push origin refs/tags/v1.2.0\n' in result.out
    assert "  git tag -f v1 v1.2.0^{}\n  git push -f origin refs/tags/v1\n" in result.out
    assert git(repo, "tag", "--list") == ""


def test_apply_tags_and_pushes_the_version_only(repo: Path) -> None:
    result = release(repo, "plan", "1.2.0", "--apply")
    assert result.code == 0, result.err
    assert "tagged and pushed v1.2.0" in result.out
    head = git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "rev-parse", "v1.2.0^{commit}").strip() == head
    assert git(repo, "cat-file", "-t", "v1.2.0").strip() == "tag"  # annotated
    pushed = git(repo, "ls-remote", "--tags", "origin")
    assert "refs/tags/v1.2.0" in pushed
    assert "refs/tags/v1\n" not in pushed  # the release workflow moves v1 once the tests pass

    again = release(repo, "plan", "1.2.0")
    assert again.code == 1
    assert "tag v1.2.0 exists already: a release is never re-tagged; bump the version" in again.err


def test_version_missing_from_the_changelog(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "mlgate", version="1.3.0", changelog_version="1.2.0")
    result = release(repo, "plan", "1.3.0")
    assert result.code == 1
    assert (
        "error: CHANGELOG.md has no `## [1.3.0] - YYYY-MM-DD` section: move the entries under "
        "`## [Unreleased]` into a section for 1.3.0 with today's date, and commit it"
    ) in result.err
    assert "error: v1.3.0 is not ready to release (1 problem(s) above)" in result.err
    assert "would run" not in result.out


@pytest.mark.parametrize("version", ["1.2", "1.2.0.1", "v01.2.0", "1.2.0-rc.1", "latest", "1.2.0+build"])
def test_a_version_that_is_not_semver(repo: Path, version: str) -> None:
    result = release(repo, "plan", version)
    assert result.code == 1
    assert result.err.startswith(f"error: `{version}` is not a release version: write X.Y.Z")
    assert result.out == ""


def test_a_major_that_disagrees_with_release_ref(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "mlgate", version="2.0.0", release_ref="v1")
    result = release(repo, "plan", "2.0.0")
    assert result.code == 1
    assert (
        "error: mlgate.RELEASE_REF is v1 but v2.0.0 belongs to v2: a new major bumps RELEASE_REF in "
        "scripts/mlgate/__init__.py and every `mlgate/mlgate/...@v1` with it"
    ) in result.err


def test_a_self_reference_that_disagrees_with_release_ref(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "mlgate", version="2.0.0", release_ref="v2", self_ref="v1")
    result = release(repo, "plan", "2.0.0")
    assert result.code == 1
    assert "ok       mlgate.RELEASE_REF is v2, the major of v2.0.0" in result.out
    assert "error: self-references disagree with mlgate.RELEASE_REF:" in result.err
    assert "ml-ci.yml:8: `mlgate/mlgate/actions/lint@v1`: ref must be the release ref `v2`" in result.err


def test_a_package_version_that_is_not_the_release(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "mlgate", version="1.1.0", changelog_version="1.2.0")
    result = release(repo, "plan", "1.2.0")
    assert result.code == 1
    assert "error: pyproject.toml's version is 1.1.0, not 1.2.0" in result.err


def test_uncommitted_changes_warn_in_a_dry_run_and_stop_a_release(repo: Path) -> None:
    (repo / "notes.txt").write_text("draft\n", encoding="utf-8")
    dry = release(repo, "plan", "1.2.0")
    assert dry.code == 0, dry.err
    assert "warning  the working tree has 1 uncommitted change(s); commit or remove them first" in dry.out
    applied = release(repo, "plan", "1.2.0", "--apply")
    assert applied.code == 1
    assert "error: the working tree has 1 uncommitted change(s)" in applied.err
    assert git(repo, "tag", "--list") == ""


def test_notes_are_the_version_section_without_link_definitions(repo: Path) -> None:
    result = release(repo, "notes", "v1.2.0")
    assert result.code == 0, result.err
    assert result.out == textwrap.dedent(
        """\
        ### Added
        - The registry gate.

        ### Fixed
        - A typo in a hint.
        """
    )


def test_verify_is_what_the_release_workflow_repeats(repo: Path) -> None:
    assert release(repo, "verify", "v1.2.0").code == 0
    wrong = release(repo, "verify", "v1.2.1")
    assert wrong.code == 1
    assert "no `## [1.2.1] - YYYY-MM-DD` section" in wrong.err
    assert "pyproject.toml's version is 1.2.0, not 1.2.1" in wrong.err


def test_a_section_without_its_date_is_refused(repo: Path) -> None:
    changelog = repo / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace("## [1.2.0] - 2026-11-20", "## [1.2.0]"), encoding="utf-8")
    result = release(repo, "verify", "1.2.0")
    assert result.code == 1
    assert "CHANGELOG.md:8: `## [1.2.0]` needs the release date: `## [1.2.0] - YYYY-MM-DD`" in result.err


def test_this_repository_keeps_a_changelog() -> None:
    """CHANGELOG.md opens with Unreleased, and every release section is `## [X.Y.Z] - YYYY-MM-DD`."""
    headings = [line for line in (REPO_ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")]
    assert headings and headings[0] == "## [Unreleased]"
    for heading in headings[1:]:
        assert re.fullmatch(r"## \[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}", heading), heading
