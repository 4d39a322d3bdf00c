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
from mlgate.rollout import leftovers
from mlgate.traffic.state import alive, command_line, stop_group

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


def write_note(folder: Path, owner: int, load: subprocess.Popen[bytes], line: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    note = {
        "pid": owner,
        "host": socket.gethostname(),
        "load": {"pid": load.pid, "command_line": line or command_line(load.pid), "log": str(folder / "load.log")},
    }
    (folder / leftovers.NOTE).write_text(json.dumps(note))


def test_the_controller_notes_and_forgets_what_it_started(tmp_path: Path) -> None:
    leftovers.note(tmp_path, "load", {"pid": 1, "command_line": "x"})
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
    write_note(tmp_path, owner=dead_pid(), load=load, line="locust -f load/locustfile.py --headless")
    assert leftovers.stop_leftovers(tmp_path) == []
    assert alive(load.pid)
    assert not (tmp_path / leftovers.NOTE).exists()  # nothing of the rollout's is left to stop


def test_the_load_output_is_its_tail(tmp_path: Path) -> None:
    log = tmp_path / "load.log"
    log.write_text("".join(f"line {n}\n" for n in range(200)))
    shown = leftovers.load_output(log)
    assert "line 199" in shown and "line 139" not in shown and f"last {leftovers.TAIL_LINES} lines" in shown
    assert "cannot be read" in leftovers.load_output(tmp_path / "missing.log")
