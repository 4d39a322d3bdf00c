"""Run a gate's child process (training, model tests) with its output echoed live and kept as a log."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlgate.errors import ToolError

LOG_TAIL_LINES = 30


def stream(
    command: list[str], cwd: Path, env: dict[str, str], log_path: Path, *, what: str = "training command", hint: str
) -> tuple[int, list[str], float]:
    """Run `command`, echoing its output, writing it all to `log_path`; (exit code, last lines, seconds)."""
    if not command or shutil.which(command[0], path=env.get("PATH")) is None:
        raise ToolError(f"{what} {command[0] if command else '(empty)'!r} not found", hint=hint)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            tail.append(line.rstrip("\n"))
        code = process.wait()
    return code, list(tail), time.perf_counter() - started
