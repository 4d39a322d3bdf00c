"""What a rollout starts beside its controller is stopped by `abort` once that controller is dead, and only then:
the note in the state folder, a real load process, a pid that now runs something else."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlgate.procio import stop_group
from mlgate.rollout import leftovers
from mlgate.statefile import alive, started_at

SLEEPER = [sys.executable, "-c", "import time; print('load: 3 requests', flush=True); time.sleep(120)"]


@pytest.fixture
def load(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with (tmp_path / "load.log").open("wb") as output:
        process = subprocess.Popen(SLEEPER, stdout=output, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            stop_group(process.pid, first=signal.SIGKILL, grace_s=5.0)
        process.wait(timeout=10)


def dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=30)
    return finished.pid


def write_note(folder: Path, owner: int, load: subprocess.Popen[bytes], started: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    note = {
        "pid": owner,
        "host": socket.gethostname(),
        "load": {"pid": load.pid, "started_at": started or started_at(load.pid), "log": str(folder / "load.log")},
    }
    (folder / leftovers.NOTE).write_text(json.dumps(note))


def test_the_controller_notes_and_forgets_what_it_started(tmp_path: Path) -> None:
    leftovers.note(tmp_path, "load", {"pid": 1, "started_at": 1})
    leftovers.note(tmp_path, "stack", {"prefix": str(tmp_path / "traffic")})
    noted = json.loads((tmp_path / leftovers.NOTE).read_text())
    assert set(noted) == {"pid", "host", "load", "stack"}
    assert stop_leftovers_is_a_no_op_while_alive(tmp_path)
    leftovers.forget(tmp_path, "load")
    assert set(json.loads((tmp_path / leftovers.NOTE).read_text())) == {"pid", "host", "stack"}
    leftovers.forget(tmp_path, "stack")
    assert not (tmp_path / leftovers.NOTE).exists()


def stop_leftovers_is_a_no_op_while_alive(folder: Path) -> bool:
    before = (folder / leftovers.NOTE).read_text()
    return leftovers.stop_leftovers(folder) == [] and (folder / leftovers.NOTE).read_text() == before


def test_a_live_controllers_load_is_left_alone(tmp_path: Path, load: subprocess.Popen[bytes]) -> None:
    write_note(tmp_path, owner=load.pid, load=load)  # an owner that runs: it stops its load itself
    assert leftovers.stop_leftovers(tmp_path) == []
    assert alive(load.pid)


def test_a_dead_controllers_load_is_stopped_and_its_output_shown(tmp_path: Path, load: subprocess.Popen[bytes]) -> None:
    write_note(tmp_path, owner=dead_pid(), load=load)
    deadline = time.monotonic() + 60
    while not (tmp_path / "load.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # the load has said something
    done = leftovers.stop_leftovers(tmp_path)
    load.wait(timeout=30)
    assert not alive(load.pid)
    assert done[0] == f"stopped the load generator the rollout started (pid {load.pid})"
    assert "load: 3 requests" in done[1]
    assert not (tmp_path / leftovers.NOTE).exists()
    assert leftovers.stop_leftovers(tmp_path) == []  # once


def test_a_pid_that_now_runs_something_else_is_not_signalled(tmp_path: Path, load: subprocess.Popen[bytes]) -> None:
    write_note(tmp_path, owner=dead_pid(), load=load, started=(started_at(load.pid) or 0) - 1)  # another process
    assert leftovers.stop_leftovers(tmp_path) == []
    assert alive(load.pid)
    assert not (tmp_path / leftovers.NOTE).exists()  # nothing of the rollout's is left to stop


def test_the_load_output_is_its_tail(tmp_path: Path) -> None:
    log = tmp_path / "load.log"
    log.write_text("".join(f"line {n}\n" for n in range(200)))
    shown = leftovers.load_output(log)
    assert "line 199" in shown and "line 139" not in shown and f"last {leftovers.TAIL_LINES} lines" in shown
    assert "cannot be read" in leftovers.load_output(tmp_path / "missing.log")


def test_a_process_is_known_by_its_start_across_an_exec(tmp_path: Path) -> None:
    """A launcher that execs its interpreter (pip's long-shebang scripts do, through /bin/sh) keeps its start."""
    script = tmp_path / "launcher"
    script.write_text(f"#!/bin/sh\nsleep 0.5\nexec {sys.executable} -c 'import time; time.sleep(30)'\n")
    script.chmod(0o755)
    process = subprocess.Popen([str(script)], start_new_session=True)
    try:
        before = started_at(process.pid)
        deadline = time.monotonic() + 30
        while "python" not in Path(f"/proc/{process.pid}/cmdline").read_text(errors="replace"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert before is not None and started_at(process.pid) == before
    finally:
        stop_group(process.pid, first=signal.SIGKILL, grace_s=5.0)
        process.wait(timeout=10)
    assert started_at(process.pid) is None
