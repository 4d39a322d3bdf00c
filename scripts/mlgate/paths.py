"""Paths a config names, held to the project root, and text files read without surprises.

A path in mlgate.yaml is relative to the project root (the folder of mlgate.yaml) and must stay
inside it, after symlinks are followed, unless the config opts in for that path. A file mlgate
reads must be a regular file: a folder, a FIFO (which would block), a device (`/dev/zero` never
ends) or a socket is refused before it is opened for reading. Text files are read whole only up to
a size cap and must be UTF-8. No message here quotes a file's contents.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

# mlgate.yaml and workflow files are a few kilobytes; a megabyte is a mistake or an attack.
MAX_TEXT_BYTES = 1 << 20


class FileRefused(Exception):
    """A file that mlgate will not read; `reason` completes the sentence "<path> ..."."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def escapes_lexically(relative: str) -> bool:
    """True when `relative` is absolute or climbs above its starting folder with `..` (no file is read)."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or relative.startswith("~"):
        return True
    depth = 0
    for part in pure.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False


def outside_root(root: Path, path: Path) -> Path | None:
    """Where `path` really is when that is outside `root` (symlinks followed), else None."""
    real = path.resolve()
    base = root.resolve()
    return None if real == base or real.is_relative_to(base) else real


# pip options whose value is a file pip reads (requirements, constraints).
PIP_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")


def pip_files(install: list[str]) -> Iterator[tuple[int, str]]:
    """The requirement and constraint files named in pip arguments, with the index of the file's argument."""
    for index, arg in enumerate(install):
        if arg in PIP_FILE_OPTIONS:
            if index + 1 < len(install):
                yield index + 1, install[index + 1]
        elif arg.startswith(("--requirement=", "--constraint=")):
            yield index, arg.split("=", 1)[1]
        elif len(arg) > 2 and arg[:2] in ("-r", "-c"):
            yield index, arg[2:]


def pip_local_paths(install: list[str]) -> Iterator[tuple[int, str]]:
    """Local projects and files pip is asked to install (`.`, `-e .[extra]`, `./dist/x.whl`)."""
    for index, arg in enumerate(install):
        if index and install[index - 1] in PIP_FILE_OPTIONS:
            continue
        if arg.startswith("--editable="):
            arg = arg.split("=", 1)[1]
        if arg.startswith("-") or "://" in arg or arg.startswith(("git+", "file:")):
            continue
        local = arg.split("[", 1)[0]
        if local.startswith(".") or "/" in local:
            yield index, local


def pip_file_urls(install: list[str]) -> Iterator[tuple[int, str]]:
    """The local paths behind `file:` URLs in pip arguments (`-e file:///x`, `pkg @ file:///x/pkg.whl`)."""
    for index, arg in enumerate(install):
        start = arg.find("file:")
        if start < 0 or (start and arg[start - 1] not in " =@"):
            continue
        url = urlsplit(arg[start:].split()[0])
        if url.netloc in ("", "localhost") and url.path:
            yield index, unquote(url.path)


def kind_problem(path: Path) -> str | None:
    """Why `path` is not a regular file (completing "<path> ..."), or None when it is one."""
    try:
        mode = path.stat().st_mode  # follows symlinks: the target is what would be read
    except FileNotFoundError:
        return "is a symlink to a file that does not exist" if path.is_symlink() else "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return _mode_problem(mode)


def _mode_problem(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def read_text(path: Path, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of the regular file `path`, at most `max_bytes` long; FileRefused otherwise."""
    problem = kind_problem(path)
    if problem:
        raise FileRefused(problem)
    try:
        # O_NONBLOCK: a FIFO swapped in after the check above must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileRefused(f"cannot be opened ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        problem = _mode_problem(info.st_mode)
        if problem:
            raise FileRefused(problem)
        if info.st_size > max_bytes:
            raise FileRefused(f"is {info.st_size} bytes, more than the {max_bytes} allowed")
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise FileRefused(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise FileRefused(f"is more than the {max_bytes} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileRefused(
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, offset {exc.start})"
        ) from None


def workflow_files(root: Path) -> list[Path]:
    """The GitHub workflows a model project runs: `.github/workflows/*.yml` of the project root and of each
    folder above it up to the git root.

    Outside a git repository only the project root's own: a folder above it is someone else's.
    """
    found: list[Path] = []
    folder = root.resolve()
    while True:
        workflows = folder / ".github" / "workflows"
        listed = sorted([*workflows.glob("*.yml"), *workflows.glob("*.yaml")]) if workflows.is_dir() else []
        found += listed
        if (folder / ".git").exists():
            return found
        if folder.parent == folder:
            own = root.resolve() / ".github" / "workflows"
            return [path for path in found if path.parent == own]
        folder = folder.parent
