"""What a rollout starts beside its controller (`--serve`'s nginx stack, `--load`'s generator), noted in the state
folder so that `mlgate rollout abort` can stop it when the controller was killed outright and never reached its
own clean-up. A controller that ends normally (or on SIGINT/SIGTERM) stops both itself and forgets the note.

The note (`started.json`) holds the controller's pid and host, the stack's folder, and the load's pid with the
moment it started: a pid is signalled only while /proc shows that same process (its start time), not another
that reused the pid. (Not its command line: a launcher script with a long shebang is `/bin/sh` for an instant,
then execs its interpreter.)
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mlgate.errors import InputError
from mlgate.procio import stop_group
from mlgate.statefile import alive, checked_state, read_state, started_at, write_state

NOTE = "started.json"
LOAD_LOG = "load.log"
TAIL_LINES = 60  # locust's summary: its stats, percentiles and error report


def load_output(log: Path) -> str:
    """The last lines the load generator wrote, for the job's log."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"mlgate rollout: the load generator's output ({log}) cannot be read"
    shown = "\n".join(f"  {line}" for line in lines[-TAIL_LINES:])
    cut = f" (its last {TAIL_LINES} lines; all of it in {log})" if len(lines) > TAIL_LINES else ""
    return f"mlgate rollout: the load generator's output{cut}:\n{shown}"


class _Read(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")  # as the rollout's state file is read (controller)


class _Load(_Read):
    pid: int
    started_at: int | None = None
    log: str | None = None


class _Stack(_Read):
    prefix: str


class Note(_Read):
    """The note's shape: the controller that wrote it, and what it started."""

    pid: int
    host: str
    load: _Load | None = None
    stack: _Stack | None = None


def _path(folder: Path) -> Path:
    return folder / NOTE


def _read(folder: Path) -> dict[str, Any] | None:
    path = _path(folder)
    fix = (
        "the file was edited or is not mlgate's: stop what the rollout started by hand (the load generator; "
        f"`mlgate traffic down` for a --serve stack), then delete {path}"
    )
    found = read_state(path, fix=fix)
    return None if found is None else checked_state(path, found, Note, fix)


def _ours(folder: Path) -> dict[str, Any] | None:
    """The note as the controller reads it while it runs: one that is not mlgate's is none of its own (it is
    replaced, never a reason to leave what was just started unnoted or unstopped); `abort` reports it."""
    try:
        return _read(folder)
    except InputError:
        return None


def note(folder: Path, key: str, value: dict[str, Any]) -> None:
    """Add what was just started (`stack` or `load`) to the note of this controller."""
    found = _ours(folder) or {}
    if found.get("pid") != os.getpid():
        found = {}  # a note of an earlier controller whose leftovers were stopped: start a new one
    found.update({"pid": os.getpid(), "host": socket.gethostname(), key: value})
    write_state(_path(folder), found)


def forget(folder: Path, key: str) -> None:
    """The controller stopped it itself."""
    found = _ours(folder)
    if found is None or found.get("pid") != os.getpid():
        return
    found.pop(key, None)
    if set(found) <= {"pid", "host"}:
        _path(folder).unlink(missing_ok=True)
    else:
        write_state(_path(folder), found)


def stop_leftovers(folder: Path) -> list[str]:
    """Stop the load and the stack a dead controller left running; what was done (nothing while it lives)."""
    found = _read(folder)
    if found is None:
        return []
    if found.get("host") != socket.gethostname() or alive(int(found.get("pid") or 0)):
        return []  # its controller runs (or runs elsewhere): it stops them itself
    done: list[str] = []
    load = found.get("load") or {}
    pid = int(load.get("pid") or 0)
    if pid and alive(pid) and started_at(pid) == load.get("started_at"):
        stop_group(pid, first=signal.SIGTERM, grace_s=10.0)
        done.append(f"stopped the load generator the rollout started (pid {pid})")
        if load.get("log"):
            done.append(load_output(Path(load["log"])))
    stack = found.get("stack") or {}
    if stack.get("prefix"):
        from mlgate.traffic.nginx import Layout
        from mlgate.traffic.stack import down

        done += [f"took down the stack the rollout started: {line}" for line in down(Layout(Path(stack["prefix"])))]
    _path(folder).unlink(missing_ok=True)
    return done
