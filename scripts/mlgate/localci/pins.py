"""The third-party actions mlgate's workflows pin, and the act flags that serve each from its offline stand-in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlgate.errors import ToolError

# Package data (see [tool.setuptools.package-data]): <owner>/<name>/action.yml for every pinned repository,
# each saying in its header what real behaviour it replaces.
STANDINS_DIR = Path(__file__).resolve().parent / "standins"


@dataclass(frozen=True)
class Pin:
    """One third-party action as the workflows pin it."""

    repository: str  # owner/name, as in `uses: owner/name[/sub]@sha`
    version: str  # the `# vX.Y.Z` comment that must follow the sha
    sha: str


# tests/static checks that every third-party `uses:` in the repository is one of these, with this
# sha and comment, and that each has a stand-in: a new pin is added here and in standins/ together.
PINS: tuple[Pin, ...] = (
    Pin("actions/checkout", "v7.0.1", "3d3c42e5aac5ba805825da76410c181273ba90b1"),
    Pin("actions/setup-python", "v7.0.0", "5fda3b95a4ea91299a34e894583c3862153e4b97"),
    Pin("actions/upload-artifact", "v7.0.0", "bbbca2ddaa5d8feaa63e36b76fdaad77386f024f"),
    Pin("actions/download-artifact", "v8.0.1", "3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c"),
    Pin("actions/cache", "v5.0.5", "27d5ce7f107fe9357f9df03efb73ab90386fccae"),
)

PINS_BY_REPOSITORY: dict[str, Pin] = {pin.repository: pin for pin in PINS}


def local_repository_args(standins: Path = STANDINS_DIR) -> list[str]:
    """`--local-repository owner/name@sha=<abs dir>` for every pin, as act 0.2.89 expects.

    One entry per repository is enough for its sub-path actions too: act maps
    `actions/cache@sha` to the directory and then reads `restore/action.yml` inside it for
    `uses: actions/cache/restore@sha`.
    """
    base = standins.resolve()
    args: list[str] = []
    for pin in PINS:
        directory = base / pin.repository
        if not (directory / "action.yml").is_file():
            # Only a broken install gets here: the stand-ins ship inside the package.
            raise ToolError(
                f"no stand-in for {pin.repository}: {directory}/action.yml is missing",
                hint="reinstall mlgate: pip install --force-reinstall 'mlgate[ci]'",
            )
        args += ["--local-repository", f"{pin.repository}@{pin.sha}={directory}"]
    return args
