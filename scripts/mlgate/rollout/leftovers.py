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

from mlgate.procio import stop_group
from mlgate.statefile import alive, read_state, started_at, write_state

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


def _path(folder: Path) -> Path:
    return folder / NOTE


def note(folder: Path, key: str, value: dict[str, Any]) -> None:
    """Add what was just started (`stack` or `load`) to the note of this controller."""
    found = read_state(_path(folder)) or {}
    if found.get("pid") != os.getpid():
        found = {}  # a note of an earlier controller whose leftovers were stopped: start a new one
    found.update({"pid": os.getpid(), "host": socket.gethostname(), key: value})
    write_state(_path(folder), found)


def forget(folder: Path, key: str) -> None:
    """The controller stopped it itself."""
    found = read_state(_path(folder))
    if found is None or found.get("pid") != os.getpid():
        return
    found.pop(key, None)
    if set(found) <= {"pid", "host"}:
        _path(folder).unlink(missing_ok=True)
    else:
        write_state(_path(folder), found)


def stop_leftovers(folder: Path) -> list[str]:
    """Stop the load and the stack a dead controller left running; what was done (nothing while it lives)."""
    found = read_state(_path(folder))
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
