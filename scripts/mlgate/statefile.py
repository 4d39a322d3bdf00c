"""What the traffic stack and the rollout keep between commands: a JSON state file, a lock, the pids and ports in it.

A pid in a state file may outlive its process (a reboot, a crash) and be reused by another; every
signal is sent only after /proc says the pid still runs the command mlgate started there (`runs`,
`started_at`). Stopping a process group is `procio.stop_group`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mlgate.errors import InputError, ToolError

LOOPBACK = "127.0.0.1"
# What to do about a state file that is not mlgate's: the traffic stack's (a rollout's passes its own fix).
FIX = "stop what it described (`mlgate traffic down`, `mlgate rollout abort`), delete the file, start again"


def read_state(path: Path, *, fix: str | None = None) -> dict[str, Any] | None:
    """The state file's object, None when there is none. One that is not a JSON object is bad input (a file
    edited by hand, or not mlgate's) naming it, with `fix` as the hint; one that cannot be read is a ToolError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ToolError(f"{path}: cannot read the state file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: the state file is not UTF-8 text", hint=fix or FIX) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: the state file is not JSON ({exc.msg}, line {exc.lineno})", hint=fix or FIX
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the state file holds a JSON {type(data).__name__}, not an object", hint=fix or FIX)
    return data


def checked_state(path: Path, data: dict[str, Any], shape: type[BaseModel], fix: str) -> dict[str, Any]:
    """`data`, read back from the state file at `path`, once it has `shape` (every key of the right type, as
    strictly as mlgate.yaml's); else bad input naming the file and the first wrong key, with `fix` as the hint.
    `data` itself comes back: the readers keep the keys as they were written."""
    try:
        shape.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _location(tuple(first["loc"]))
        found = "" if first["type"] == "missing" else f" (it holds {_shown(first['input'])})"
        # A nested model's name ("instance of _Server") means nothing to whoever opens the file.
        what = "Input should be a JSON object" if first["type"] in ("model_type", "dict_type") else first["msg"]
        raise InputError(f"{path}: key {key}: {what}{found}", hint=fix) from None
    return data


def _location(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Replace the state file in one step: a reader sees the old state or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One `mlgate traffic` change at a time per folder (two rollout steps must not reload each other's split)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def command_line(pid: int) -> str:
    """The process's command line (NULs as spaces), or "" when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def started_at(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (/proc/PID/stat's 22nd field); None when there is no such
    process. It identifies one process across its exec()s (a launcher script that execs its interpreter
    changes its command line, not this) and against the reuse of its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The fields after the command name (in parentheses, which may hold spaces): state is the 3rd field overall.
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    if pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # our own child: reap it, so it stops being a zombie
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def runs(pid: int | None, *words: str) -> bool:
    """Whether `pid` is alive and its command line holds each of `words`: the process mlgate started there."""
    if not pid or not alive(pid):
        return False
    line = command_line(pid)
    return all(word in line for word in words)


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx binds: a TIME_WAIT port is free
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def require_free_port(port: int, where: str) -> None:
    """An InputError naming the port when something already listens on it."""
    if port_in_use(port):
        raise InputError(
            f"port {port} on {LOOPBACK} is in use by another process",
            hint=f"set {where} (or pass --port) to a free port, or stop the process listening on it "
            f"(`ss -ltnp 'sport = :{port}'`)",
        )
