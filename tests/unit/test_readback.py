"""What mlgate reads back from files it wrote earlier, parsed as strictly as mlgate.yaml: the rollout's state file,
the note of what a rollout started, and a model's MLmodel naming a loader that does not exist. Each wrong key is
one InputError naming the file and the key, with a fix that does not need the broken file."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from mlgate.errors import InputError, ToolError
from mlgate.mlflowio import loader_failure
from mlgate.rollout import leftovers
from mlgate.rollout.controller import RolloutState, refuse_if_running
from mlgate.rollout.report import markdown, status_text
from mlgate.statefile import read_state

RUNNING: dict[str, Any] = {
    "id": "f1rst",
    "phase": "running",
    "pid": os.getpid(),
    "host": socket.gethostname(),
    "canary": {"model": "fraud", "version": "2"},
}


def state_with(tmp_path: Path, data: Any) -> RolloutState:
    state = RolloutState(tmp_path / "rollout")
    state.folder.mkdir(parents=True)
    state.path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return state


@pytest.mark.parametrize(
    ("change", "key", "holds"),
    [
        ({"pid": "12x"}, "pid", '"12x"'),
        ({"pid": "12"}, "pid", '"12"'),  # strict: a number written as a string is not mlgate's
        ({"canary": "fraud v2"}, "canary", '"fraud v2"'),
        ({"canary": {"model": "fraud", "version": 2}}, "canary.version", "2"),
        ({"phase": "done"}, "phase", '"done"'),
        ({"step": ["5%"]}, "step", '["5%"]'),
        ({"steps": [{"name": "5%", "analyses": [{"canary": {"requests": "many"}}]}]},
         "steps[0].analyses[0].canary.requests", '"many"'),
        ({"plan": {"steps": [{"name": 5}]}}, "plan.steps[0].name", "5"),
        ({"started_at": "yesterday"}, "started_at", '"yesterday"'),
    ],
)  # fmt: skip
def test_a_state_key_of_the_wrong_type_names_the_file_and_the_key(
    tmp_path: Path, change: dict[str, Any], key: str, holds: str
) -> None:
    state = state_with(tmp_path, RUNNING | change)
    with pytest.raises(InputError) as refused:
        state.read()
    assert refused.value.message.startswith(f"{state.path}: key {key}: ")
    assert f"(it holds {holds})" in refused.value.message
    assert refused.value.exit_code == 3
    # The fix does not run a rollout command, which would read the same file.
    hint = refused.value.hint or ""
    assert "mlgate traffic set --canary 0" in hint and f"delete {state.path}" in hint


@pytest.mark.parametrize("missing", ["id", "phase", "pid", "host", "canary"])
def test_a_state_without_a_key_that_names_the_rollout_is_refused(tmp_path: Path, missing: str) -> None:
    state = state_with(tmp_path, {k: v for k, v in RUNNING.items() if k != missing})
    with pytest.raises(InputError, match=f"key {missing}: Field required$"):
        state.read()


@pytest.mark.parametrize(
    ("text", "says"),
    [("{x", "is not JSON"), ("[1, 2]", "holds a JSON list, not an object"), ("null", "holds a JSON NoneType")],
)
def test_a_state_file_that_is_no_json_object_is_bad_input(tmp_path: Path, text: str, says: str) -> None:
    state = state_with(tmp_path, text)
    with pytest.raises(InputError, match=says) as refused:
        state.read()
    assert "mlgate traffic set --canary 0" in (refused.value.hint or "")


def test_a_state_as_mlgate_writes_it_reads_back_as_written(tmp_path: Path) -> None:
    written = RUNNING | {
        "model": "fraud",
        "stable": {"model": "fraud", "version": "1", "url": None},
        "plan": {"steps": [{"name": "5%", "stable": 95, "canary": 5}], "false_alarm_budget": 0.01,
                 "alpha_per_test": 0.001, "thresholds": {}},
        "started_at": 1.5,
        "steps": [{"index": 0, "name": "5%", "canary": 5, "analyses": [{"at": 2, "error": "down"}], "verdict": None}],
        "step": {"index": 0, "name": "5%", "canary": 5},
        "outcome": None,
        "reason": None,
        "a_newer_key": [1],
    }  # fmt: skip
    state = state_with(tmp_path, written)
    assert state.read() == written


def test_a_partial_state_that_reads_back_renders_without_a_key_error(tmp_path: Path) -> None:
    state = state_with(tmp_path, RUNNING | {"steps": [{"name": "5%", "analyses": [{"canary": {"requests": 3}}]}]})
    found = state.read()
    assert found is not None
    assert "canary fraud v2 against stable vNone" in status_text(found, "stable 100% / canary 0%")
    assert "fraud v2" in markdown(found)
    with pytest.raises(InputError, match="already running: rollout f1rst of fraud version 2"):
        refuse_if_running(found, state.path)


def test_the_note_of_what_a_rollout_started_is_read_as_strictly(tmp_path: Path) -> None:
    folder = tmp_path / "rollout"
    folder.mkdir()
    note = folder / leftovers.NOTE
    note.write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname(), "load": {"pid": "x"}}))
    with pytest.raises(InputError, match=r"started\.json: key load\.pid: Input should be a valid integer") as bad:
        leftovers.stop_leftovers(folder)
    assert "mlgate traffic down" in (bad.value.hint or "") and note.exists()
    # A controller that starts something replaces a note that is not mlgate's rather than failing after the start.
    leftovers.note(folder, "load", {"pid": 1, "started_at": None, "log": "load.log"})
    assert (read_state(note) or {})["pid"] == os.getpid()
    leftovers.forget(folder, "load")
    assert not note.exists()


def mlmodel(folder: Path, loader: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text(f"flavors:\n  python_function:\n    loader_module: {loader}\n", encoding="utf-8")
    return folder


def import_error(module: str) -> ImportError:
    try:
        __import__(module)
    except ImportError as exc:
        return exc
    raise AssertionError(f"{module} imports")


def test_a_loader_module_that_does_not_exist_is_bad_input_naming_mlmodel(tmp_path: Path) -> None:
    model = mlmodel(tmp_path / "model", "no_such_loader.flavor")
    failure = loader_failure(import_error("no_such_loader.flavor"), model, "models:/m-1")
    assert isinstance(failure, InputError)
    assert failure.message == (
        "models:/m-1: its MLmodel file names flavors.python_function.loader_module 'no_such_loader.flavor', "
        "a module that does not exist (no module named 'no_such_loader')"
    )
    assert failure.hint and "log_model" in failure.hint


def test_a_loader_needing_a_library_that_is_not_installed_is_a_tool_missing(tmp_path: Path) -> None:
    model = mlmodel(tmp_path / "model", "json")  # the loader exists; what it imports does not
    failure = loader_failure(import_error("no_such_library_xyz"), model, "models:/m-1")
    assert isinstance(failure, ToolError)
    assert "needs the Python module 'no_such_library_xyz'" in failure.message
    assert failure.hint and "environment.install" in failure.hint
