"""Release mlgate: hold a version to the changelog, the package and the self-references, then tag and publish it.

A release is a `vX.Y.Z` tag; `v<major>` (mlgate.RELEASE_REF, the ref every `mlgate/mlgate/...@v1`
self-reference names) moves to the newest release of its line once that release's tests pass.

    make release VERSION=X.Y.Z [APPLY=1]     plan: every check, then the git commands (run only with --apply)
    python -m tools.release verify vX.Y.Z    the checks that need only the standard library (release workflow)
    python -m tools.release notes vX.Y.Z     the version's CHANGELOG.md section, for the GitHub release
    python -m tools.release publish vX.Y.Z   create (or update) the GitHub release with those notes (gh)
    python -m tools.release move-major vX.Y.Z   point `v<major>` at the release's commit (gh api)

`plan` runs on a maintainer's clone; the last three run in .github/workflows/release.yml.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# X.Y.Z only: a pre-release or build suffix would need a PEP 440 spelling in pyproject.toml and a rule
# for the major tag; mlgate has neither, so such a tag is refused rather than half-handled.
SEMVER = re.compile(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
CHANGELOG_HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?:\s+-\s+(?P<date>\S+))?\s*$")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
LINK_DEFINITION = re.compile(r"^\[[^\]]+\]:\s")


class ReleaseError(Exception):
    """A release check failed or a command could not run; the message says what to change."""


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = SEMVER.fullmatch(text.strip())
        if match is None:
            raise ReleaseError(
                f"`{text}` is not a release version: write X.Y.Z (semver: three numbers without leading "
                "zeros, no pre-release or build suffix), e.g. VERSION=1.2.0"
            )
        major, minor, patch = (int(part) for part in match.groups())
        return cls(major, minor, patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def tag(self) -> str:
        return f"v{self}"

    @property
    def major_tag(self) -> str:
        return f"v{self.major}"


@dataclass(frozen=True)
class ChangelogSection:
    heading: str
    line: int
    notes: str


@dataclass
class Report:
    """What the checks found: `ok` lines, warnings (a dry run goes on) and errors (nothing is tagged)."""

    ok: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self, passed: str, run: Callable[[], object]) -> None:
        """Record `passed` if `run()` returns without a ReleaseError, else the error's message."""
        try:
            run()
        except ReleaseError as problem:
            self.errors.append(str(problem))
        else:
            self.ok.append(passed)

    def print(self) -> None:
        for line in self.ok:
            print(f"  ok       {line}")
        for line in self.warnings:
            print(f"  warning  {line}")
        for line in self.errors:
            print(f"error: {line}", file=sys.stderr)


# --------------------------------------------------------------------------- reading the repository


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def changelog_section(root: Path, version: Version) -> ChangelogSection:
    """The `## [X.Y.Z] - YYYY-MM-DD` section of CHANGELOG.md (Keep a Changelog), without link definitions."""
    path = root / "CHANGELOG.md"
    if not path.is_file():
        raise ReleaseError(f"{_rel(path, root)} is missing; keep one in the Keep a Changelog format")
    lines = path.read_text(encoding="utf-8").splitlines()
    start = None
    for number, text in enumerate(lines):
        match = CHANGELOG_HEADING.match(text)
        if match and match["name"] == str(version):
            start = number
            date = match["date"]
            break
    if start is None:
        raise ReleaseError(
            f"CHANGELOG.md has no `## [{version}] - YYYY-MM-DD` section: move the entries under "
            f"`## [Unreleased]` into a section for {version} with today's date, and commit it"
        )
    if date is None or not ISO_DATE.fullmatch(date):
        raise ReleaseError(
            f"CHANGELOG.md:{start + 1}: `{lines[start]}` needs the release date: `## [{version}] - YYYY-MM-DD`"
        )
    body = []
    for text in lines[start + 1 :]:
        if text.startswith("## "):
            break
        if not LINK_DEFINITION.match(text):
            body.append(text)
    notes = "\n".join(body).strip()
    if not notes:
        raise ReleaseError(f"CHANGELOG.md:{start + 1}: the section for {version} is empty; list what changed")
    return ChangelogSection(lines[start], start + 1, notes + "\n")


def package_version(root: Path) -> str:
    with (root / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle).get("project", {})
    return str(project.get("version", ""))


def release_ref(root: Path) -> str:
    """`RELEASE_REF` as written in scripts/mlgate/__init__.py (read, not imported: `root` may not be installed)."""
    path = root / "scripts" / "mlgate" / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(target, ast.Name) and target.id == "RELEASE_REF" for target in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise ReleaseError(f'{_rel(path, root)}: no `RELEASE_REF = "v<major>"` assignment')


def self_reference_problems(root: Path, ref: str) -> list[str]:
    """tests/static's own check of every `mlgate/mlgate/...@REF`: the same files, the same rule.

    Imported rather than copied so a release can never pass a rule CI would fail; it needs the dev
    venv (PyYAML, pytest, mlgate), which `make release` uses.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        static = importlib.import_module("tests.static.test_workflows")
        yaml_error: type[Exception] = importlib.import_module("yaml").YAMLError
    except ImportError as missing:
        raise ReleaseError(
            f"the self-reference check needs the dev venv ({missing}): run it as `make release`"
        ) from missing
    problems: list[str] = []
    files = static.self_referencing_files(root)
    if not files:
        raise ReleaseError(f"no workflow or action found under {root}")
    for path in files:
        try:
            problems += static.wrong_self_references(path, root=root, release_ref=ref)
        except AssertionError as unreadable:  # a `uses:` the text and the YAML read differently
            problems.append(str(unreadable))
        except yaml_error as broken:
            problems.append(f"{_rel(path, root)}: not valid YAML: {' '.join(str(broken).split())}")
    return problems


# --------------------------------------------------------------------------- commands


def run(command: Sequence[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), cwd=root, capture_output=True, text=True, check=False)


def verify(root: Path, version: Version, report: Report) -> None:
    """The checks the release workflow repeats on the pushed tag (standard library only)."""
    report.check(f"CHANGELOG.md has `## [{version}]` with its notes", lambda: changelog_section(root, version))

    def same_package_version() -> None:
        found = package_version(root)
        if found != str(version):
            raise ReleaseError(
                f'pyproject.toml\'s version is {found or "missing"}, not {version}: set `version = "{version}"` '
                "so `mlgate --version` and the lineage tags name the release"
            )

    report.check(f"pyproject.toml's version is {version}", same_package_version)

    def same_major() -> None:
        ref = release_ref(root)
        if ref != version.major_tag:
            raise ReleaseError(
                f"mlgate.RELEASE_REF is {ref} but {version.tag} belongs to {version.major_tag}: a new major "
                f"bumps RELEASE_REF in scripts/mlgate/__init__.py and every `mlgate/mlgate/...@{ref}` with it "
                f"(or release a {ref.lstrip('v')}.x.y version)"
            )

    report.check(f"mlgate.RELEASE_REF is {version.major_tag}, the major of {version.tag}", same_major)


def plan(root: Path, version: Version, apply: bool, remote: str) -> int:
    mode = "tagging and pushing" if apply else "dry run; APPLY=1 tags and pushes"
    print(f"mlgate release {version.tag} ({mode})")
    report = Report()
    verify(root, version, report)

    def self_references_agree() -> None:
        try:
            ref = release_ref(root)
        except ReleaseError:
            return  # reported by the RELEASE_REF check
        problems = self_reference_problems(root, ref)
        if problems:
            raise ReleaseError("self-references disagree with mlgate.RELEASE_REF:\n  " + "\n  ".join(problems))

    report.check("every `mlgate/mlgate/...@` self-reference names mlgate.RELEASE_REF", self_references_agree)

    inside = run(["git", "rev-parse", "--is-inside-work-tree"], root)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        (report.errors if apply else report.warnings).append(f"{root} is not a git work tree: nothing to tag")
    else:
        changed = [line for line in run(["git", "status", "--porcelain"], root).stdout.splitlines() if line]
        if changed:
            message = f"the working tree has {len(changed)} uncommitted change(s); commit or remove them first"
            (report.errors if apply else report.warnings).append(message)
        else:
            report.ok.append("the working tree is clean")
        if run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{version.tag}"], root).returncode == 0:
            report.errors.append(f"tag {version.tag} exists already: a release is never re-tagged; bump the version")
        tags = run(["git", "tag", "--list", f"{version.major_tag}.*"], root).stdout.split()
        newest = max(_versions(tags), default=version)
        if newest > version:
            report.warnings.append(
                f"{newest.tag} exists: {version.major_tag} stays there "
                f"(it moves only to the newest {version.major}.x.y)"
            )

    report.print()
    if report.errors:
        print(f"error: {version.tag} is not ready to release ({len(report.errors)} problem(s) above)", file=sys.stderr)
        return 1

    commands = [
        ["git", "tag", "-a", version.tag, "-m", f"mlgate {version.tag}"],
        ["git", "push", remote, f"refs/tags/{version.tag}"],
    ]
    head = run(["git", "rev-parse", "--short", "HEAD"], root).stdout.strip() or "HEAD"
    print(f"{'running' if apply else 'would run'} (tags {head}):")
    for command in commands:
        print("  " + " ".join(_quote(part) for part in command))
    print(
        f"then .github/workflows/release.yml, on {version.tag}: the tests, the GitHub release with the notes of "
        f"CHANGELOG.md, and {version.major_tag} moved to it once the tests pass, as by hand:\n"
        f"  git tag -f {version.major_tag} {version.tag}^{{}}\n"
        f"  git push -f {remote} refs/tags/{version.major_tag}"
    )
    if not apply:
        return 0
    for command in commands:
        done = run(command, root)
        if done.returncode != 0:
            print(f"error: `{' '.join(command)}` failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return 1
    print(f"tagged and pushed {version.tag}")
    return 0


def _versions(words: Sequence[str]) -> list[Version]:
    found = []
    for word in words:
        try:
            found.append(Version.parse(word))
        except ReleaseError:
            continue  # `v1` itself, or a tag that is no release
    return found


def _quote(part: str) -> str:
    return f'"{part}"' if " " in part else part


def _gh(root: Path) -> str:
    found = shutil.which("gh")
    if found is None:
        raise ReleaseError("the GitHub CLI `gh` is not installed (GitHub's hosted runners have it)")
    if not (os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN")):
        raise ReleaseError("set GH_TOKEN (the job's GITHUB_TOKEN) for gh")
    return found


def publish(root: Path, version: Version) -> int:
    """Create the GitHub release of the pushed tag with its changelog notes; on a re-run, update the notes."""
    section = changelog_section(root, version)
    gh = _gh(root)
    with tempfile.TemporaryDirectory() as scratch:
        notes = Path(scratch) / "notes.md"
        notes.write_text(section.notes, encoding="utf-8")
        if run([gh, "release", "view", version.tag], root).returncode == 0:
            command = [gh, "release", "edit", version.tag, "--notes-file", str(notes)]
        else:
            title = f"mlgate {version.tag}"
            command = [
                gh,
                "release",
                "create",
                version.tag,
                "--verify-tag",
                "--title",
                title,
                "--notes-file",
                str(notes),
            ]
        done = run(command, root)
    if done.returncode != 0:
        raise ReleaseError(f"`gh release` failed:\n{done.stdout}{done.stderr}")
    print(done.stdout.strip() or f"released {version.tag}")
    return 0


def move_major(root: Path, version: Version, repository: str) -> int:
    """Point `v<major>` at the release's commit, unless a newer release of the same major exists."""
    gh = _gh(root)
    resolved = run(["git", "rev-parse", f"{version.tag}^{{commit}}"], root)
    if resolved.returncode != 0:
        raise ReleaseError(f"{version.tag} is not in this checkout: {resolved.stderr.strip()}")
    commit = resolved.stdout.strip()
    listed = run(
        [gh, "api", "--paginate", f"repos/{repository}/git/matching-refs/tags/{version.major_tag}.", "--jq", ".[].ref"],
        root,
    )
    if listed.returncode != 0:
        raise ReleaseError(f"could not list the {version.major_tag}.* tags: {listed.stderr.strip()}")
    released = _versions([ref.removeprefix("refs/tags/") for ref in listed.stdout.split()])
    newest = max(released, default=version)
    if newest > version:
        print(f"{newest.tag} is newer: {version.major_tag} stays where it is")
        return 0
    ref = f"tags/{version.major_tag}"
    moved = run(
        [gh, "api", "-X", "PATCH", f"repos/{repository}/git/refs/{ref}", "-f", f"sha={commit}", "-F", "force=true"],
        root,
    )
    if moved.returncode != 0 and "HTTP 422" in moved.stderr:  # the first release of this major: no tag yet
        moved = run(
            [gh, "api", "-X", "POST", f"repos/{repository}/git/refs", "-f", f"ref=refs/{ref}", "-f", f"sha={commit}"],
            root,
        )
    if moved.returncode != 0:
        raise ReleaseError(
            f"GitHub refused to move {version.major_tag} to {version.tag}: {moved.stderr.strip()}\n"
            "A token without the `workflows` permission (GITHUB_TOKEN never has it) cannot move a tag across "
            "changes to .github/workflows/: set the MAJOR_TAG_TOKEN secret (contents and workflows: write) "
            f"and re-run this job, or move it by hand: git tag -f {version.major_tag} {version.tag}^{{}} && "
            f"git push -f origin refs/tags/{version.major_tag}"
        )
    print(f"{version.major_tag} -> {version.tag} ({commit})")
    return 0


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.release", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the repository to release (default: this one)")
    commands = parser.add_subparsers(dest="command", required=True)
    planned = commands.add_parser("plan", help="check VERSION and print (or, with --apply, run) the tag commands")
    planned.add_argument("version")
    planned.add_argument("--apply", action="store_true", help="create and push the tag (default: dry run)")
    planned.add_argument("--remote", default="origin")
    for name, text in (
        ("verify", "the checks the release workflow repeats on the tag"),
        ("notes", "print the version's CHANGELOG.md section"),
        ("publish", "create the GitHub release (gh, GH_TOKEN)"),
        ("move-major", "move v<major> to the release (gh api, GH_TOKEN, GITHUB_REPOSITORY)"),
    ):
        commands.add_parser(name, help=text).add_argument("version")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    try:
        version = Version.parse(args.version)
        if args.command == "plan":
            return plan(root, version, apply=args.apply, remote=args.remote)
        if args.command == "verify":
            report = Report()
            verify(root, version, report)
            report.print()
            return 1 if report.errors else 0
        if args.command == "notes":
            sys.stdout.write(changelog_section(root, version).notes)
            return 0
        if args.command == "publish":
            return publish(root, version)
        repository = os.environ.get("GITHUB_REPOSITORY", "")
        if not repository:
            raise ReleaseError("set GITHUB_REPOSITORY (owner/name) for move-major")
        return move_major(root, version, repository)
    except ReleaseError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
