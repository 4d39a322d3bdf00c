"""The act flags that replace GitHub-hosted actions with the offline stand-ins in tests/standins."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pin:
    """One third-party action as the workflows pin it (the table of shared/PINS.md)."""

    repository: str  # owner/name, as in `uses: owner/name[/sub]@sha`
    version: str  # the `# vX.Y.Z` comment that must follow the sha
    sha: str


# Hardcoded on purpose: tests run where shared/PINS.md is not available. tests/static checks that
# every third-party `uses:` in the repository is one of these, with this sha and comment.
PINS: tuple[Pin, ...] = (
    Pin("actions/checkout", "v7.0.1", "3d3c42e5aac5ba805825da76410c181273ba90b1"),
    Pin("actions/setup-python", "v7.0.0", "5fda3b95a4ea91299a34e894583c3862153e4b97"),
    Pin("actions/upload-artifact", "v7.0.0", "bbbca2ddaa5d8feaa63e36b76fdaad77386f024f"),
    Pin("actions/download-artifact", "v8.0.1", "3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c"),
    Pin("actions/cache", "v5.0.5", "27d5ce7f107fe9357f9df03efb73ab90386fccae"),
)

PINS_BY_REPOSITORY: dict[str, Pin] = {pin.repository: pin for pin in PINS}


def standins_dir(root: Path) -> Path:
    """The stand-ins' directory, given either mlgate's root or `tests/standins` itself."""
    root = root.resolve()
    nested = root / "tests" / "standins"
    return nested if nested.is_dir() else root


def local_repository_args(root: Path) -> list[str]:
    """`--local-repository owner/name@sha=<abs dir>` for every pin, as act 0.2.89 expects.

    `root` is mlgate's checkout or its `tests/standins` directory (both are accepted).

    One entry per repository is enough for its sub-path actions too: act maps
    `actions/cache@sha` to the directory and then reads `restore/action.yml` inside it for
    `uses: actions/cache/restore@sha`.
    """
    base = standins_dir(root)
    args: list[str] = []
    for pin in PINS:
        directory = base / pin.repository
        if not (directory / "action.yml").is_file():
            raise FileNotFoundError(f"no stand-in for {pin.repository}: {directory}/action.yml is missing")
        args += ["--local-repository", f"{pin.repository}@{pin.sha}={directory}"]
    return args


def act_offline_args(root: Path) -> list[str]:
    """The act flags, besides the workflow and event, that run mlgate's workflows offline on the host.

    - `-P ubuntu-latest=-self-hosted`: host mode, no Docker.
    - `--no-cache-server`: the stand-ins keep their own cache directory; act's cache server
      would otherwise bind 192.0.2.2.
    - `--artifact-server-addr 127.0.0.1`: act's artifact server only starts with
      `--artifact-server-path`, and then must not bind the default 192.0.2.2.
    The caller adds `--env MLGATE_STANDIN_ARTIFACT_DIR=...` and `--env MLGATE_STANDIN_CACHE_DIR=...`
    (one artifact directory per act run, shared by its jobs).
    """
    return [
        "-P",
        "ubuntu-latest=-self-hosted",
        "--no-cache-server",
        "--artifact-server-addr",
        "127.0.0.1",
        *local_repository_args(root),
    ]
