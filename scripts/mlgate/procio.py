"""Run a gate's child process (training, model tests) with its output echoed live and kept as a log, and end
the process groups mlgate starts (act, MLflow, dvc, nginx, the model servers, a load generator) in one way.

The child runs with the credentials it needs (the tracking URI, MLflow's password) and may print
them (MLflow's "View run ... at <uri>"); each line is redacted before it is echoed, kept or written
to the log, which is uploaded as an artifact.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlgate.errors import ToolError
from mlgate.redaction import redact
from mlgate.statefile import wait_gone

LOG_TAIL_LINES = 30


def stream(
    command: list[str], cwd: Path, env: dict[str, str], log_path: Path, *, what: str = "training command", hint: str
) -> tuple[int, list[str], float]:
    """Run `command`, echoing its output, writing it all to `log_path`; (exit code, last lines, seconds).

    Echo, log and last lines are redacted: no secret of mlgate's registry reaches any of them.
    """
    if not command or shutil.which(command[0], path=env.get("PATH")) is None:
        raise ToolError(f"{what} {command[0] if command else '(empty)'!r} not found", hint=hint)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert process.stdout is not None
        for raw in process.stdout:
            line = redact(raw)
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            tail.append(line.rstrip("\n"))
        code = process.wait()
    return code, list(tail), time.perf_counter() - started


def stop_group(leader: int | subprocess.Popen[Any], *, first: signal.Signals = signal.SIGTERM, grace_s: float) -> bool:
    """Send `first` to the process group `leader` leads, SIGKILL after `grace_s`, then SIGKILL whatever is left in
    the group (uvicorn's or nginx's workers, act's steps); True when the leader ended within the grace.

    `leader` is the Popen of a child this process started (waited on through it, so its exit status is
    kept and no other thread's wait is raced) or a pid read back from a state file.
    """
    pid = leader if isinstance(leader, int) else leader.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, first)
    graceful = _ended(leader, grace_s)
    if not graceful:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _ended(leader, 10.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return graceful


def _ended(leader: int | subprocess.Popen[Any], seconds: float) -> bool:
    if isinstance(leader, int):
        return wait_gone(leader, seconds)
    try:
        leader.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True
