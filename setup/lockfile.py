"""The hash-pinned lock of mlgate's own dependencies: which of its packages each extra installs.

`setup/requirements.lock` pins every package of every extra (and the dev tools) with the sha256 of
each of its files on PyPI, as `pip-compile --generate-hashes` writes it. pip cannot take hashes from a
constraints file (a hash there switches hash-checking on, then every requirement lacks one), so an
install names its packages as requirements: `select` writes the lock's entries for a set of extras,
listed in `setup/requirements.extras`, and pip installs exactly those with `--require-hashes`.

    python setup/lockfile.py select lint,data FILE   # stdlib only: the root action runs it before any venv
    python setup/lockfile.py extras                  # `make lock`, in a venv of every extra: names per extra

torch is no part of the hashed set: the dev extra pins the CPU wheel, a file PyPI publishes no hash of
(see the Makefile's venv target).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "requirements.lock"
EXTRAS = HERE / "requirements.extras"
# Installed outside hash-checking mode (the Makefile's venv target), so left out of every extra's list.
UNHASHED = frozenset({"torch"})
# In every extra's list: the root action installs mlgate itself from its checkout with --no-build-isolation.
BUILD = ("setuptools",)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(text: str) -> dict[str, str]:
    """Each pinned package of the lock (canonical name) -> its entry, `name==version --hash=... ...`, on one line."""
    entries: dict[str, str] = {}
    for logical in re.sub(r"\\\n", " ", text).splitlines():
        logical = logical.split(" #", 1)[0].strip()
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", logical)
        if match:
            entries[canonical(match.group(1))] = " ".join(logical.split())
    return entries


def extras_lists(text: str) -> dict[str, list[str]]:
    """`extra: name name ...` lines of requirements.extras."""
    lists: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            extra, _, names = line.partition(":")
            lists[extra.strip()] = names.split()
    return lists


def select(extras: str, output: Path) -> int:
    """Write the lock's entries for `extras` (comma-separated; empty: mlgate's core dependencies) to `output`."""
    entries = lock_entries(LOCK.read_text(encoding="utf-8"))
    lists = extras_lists(EXTRAS.read_text(encoding="utf-8"))
    wanted = [extra.strip() for extra in extras.split(",") if extra.strip()] or ["core"]
    unknown = [extra for extra in wanted if extra not in lists]
    if unknown:
        known = ", ".join(sorted(set(lists) - {"core", "dev"}))
        print(f"::error title=mlgate setup::unknown extra {', '.join(unknown)}; the extras are: {known}")
        return 3
    names = sorted({name for extra in wanted for name in lists[extra]})
    missing = [name for name in names if name not in entries]
    if missing:
        print(f"::error title=mlgate setup::{LOCK.name} has no entry for {', '.join(missing)}; run `make lock`")
        return 3
    output.write_text("".join(entries[name] + "\n" for name in names), encoding="utf-8")
    return 0


def extras() -> int:
    """Print requirements.extras: the packages each extra of pyproject.toml installs, read from this venv."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    project = tomllib.loads((HERE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    entries = lock_entries(LOCK.read_text(encoding="utf-8"))

    def own(requirement: Requirement) -> list[Requirement]:
        """mlgate's own `mlgate[a,b]`: the requirements of those extras."""
        return [inner for extra in sorted(requirement.extras) for inner in map(Requirement, optional[extra])]

    def closure(requirements: list[Requirement]) -> set[str]:
        seen: set[tuple[str, frozenset[str]]] = set()
        names: set[str] = set()
        todo = list(requirements)
        while todo:
            requirement = todo.pop()
            key = (canonical(requirement.name), frozenset(requirement.extras))
            if key in seen:
                continue
            seen.add(key)
            if key[0] == "mlgate":
                todo += own(requirement)
                continue
            names.add(key[0])
            for line in metadata.distribution(requirement.name).requires or []:
                inner = Requirement(line)
                # evaluate() fills in this interpreter's environment around the extra.
                environments = [{"extra": extra} for extra in requirement.extras or [""]]
                if inner.marker is None or any(inner.marker.evaluate(env) for env in environments):
                    todo.append(inner)
        return names

    core = [Requirement(line) for line in project["dependencies"]]
    lists = {"core": closure(core)} | {extra: closure(core + [Requirement(line) for line in optional[extra]])
                                        for extra in optional}  # fmt: skip
    print("# The packages each extra installs, read from a venv holding them all; written by `make lock`.")
    problems = []
    for extra, names in lists.items():
        names = (names | set(BUILD)) - UNHASHED
        problems += [f"{extra}: {name}" for name in sorted(names) if name not in entries]
        print(f"{extra}: {' '.join(sorted(names))}")
    if problems:
        print(f"requirements.lock lacks what these extras install: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "select":
        sys.exit(select(sys.argv[2], Path(sys.argv[3])))
    if len(sys.argv) == 2 and sys.argv[1] == "extras":
        sys.exit(extras())
    print(__doc__.split("\n\n")[2], file=sys.stderr)
    sys.exit(2)
