"""docs/local-runs.md's "same gates locally", as written and in order, in one copy of the example project;
and every gate of the second example under a config that is not named mlgate.yaml (`--config`), as a
repository with two models side by side runs them.

The docs' block is read from the page itself, so a command that stops working there, or a step the page
gains, is tested as the page shows it. Two kinds of lines are not run: `pip install` (the tests' venv is
the install) and the plain-pytest pair at the end, which needs the project's own libraries installed
beside mlgate (tests/unit/test_modeltest.py runs the plugin that way on its own models).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import BIN, Project, Workbench

DOCS = Path(__file__).resolve().parents[2] / "docs" / "local-runs.md"
SECTION = "## The same gates locally"
MODEL_URI = re.compile(r"model-uri[=: ]+(models:/m-\w+)")
# A step the page marks as one that fails, with the exit code a failed gate has.
EXPECTED_TO_FAIL = "fails"
GATE_FAILED = 1


def _sequence() -> list[tuple[str, str]]:
    """The section's shell block: (command, comment) per line, in order."""
    text = DOCS.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOCS.name} has no section {SECTION!r}"
    block = text.split(SECTION, 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    steps = []
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        command = command.strip()
        if command and not command.startswith(("pip ", "cd ", "MLFLOW_TRACKING_URI=")):
            steps.append((command, comment.strip()))
    return steps


def _run(project: Project, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    if argv[0] == "mlgate":
        argv[0] = str(BIN / "mlgate")
    return subprocess.run(argv, cwd=project.path, env=env, capture_output=True, text=True, check=False, timeout=900)


def _env(workbench: Workbench, project: Project) -> dict[str, str]:
    env = dict(project.env)
    env["MLGATE_VENV_ROOT"] = str(workbench.venv_root)  # the project venv the act runs build, reused
    if project.remote is not None:
        env["DVC_REMOTE_URL"] = str(project.remote)  # setup-dvc-remote.sh's remote, without its argument
    for name in ("MLFLOW_TRACKING_URI", "GITHUB_TOKEN"):
        env.pop(name, None)
    return env


def test_the_docs_local_sequence_runs_as_written_in_one_project_folder(workbench: Workbench) -> None:
    steps = _sequence()
    assert any(command.startswith("mlgate compress") for command, _ in steps), steps
    project = workbench.new_project("local-sequence")
    env = _env(workbench, project)
    model_uri = None
    for command, comment in steps:
        if "models:/m-..." in command:
            assert model_uri, f"no model-uri printed by a train step before {command!r}"
            command = command.replace("models:/m-...", model_uri)
        done = _run(project, command, env)
        output = done.stdout + done.stderr
        expected = GATE_FAILED if EXPECTED_TO_FAIL in comment.split() else 0
        assert done.returncode == expected, f"{command} exited {done.returncode}, not {expected}:\n{output[-5000:]}"
        assert "Traceback" not in output, f"{command}:\n{output[-5000:]}"
        if command.startswith("mlgate train"):
            found = MODEL_URI.findall(output)
            assert found, f"{command} printed no model-uri:\n{output[-3000:]}"
            model_uri = found[-1]
    assert (project.path / "mlgate-outputs" / "test-model.json").is_file()
    assert (project.path / "mlflow.db").is_file()


# Every gate that reads the project's config, as a repository with two configs side by side runs it.
OTHER_CONFIG = "mlgate-churn.yaml"
MODEL = "churn"  # its registered model


def test_every_gate_runs_on_a_config_not_named_mlgate_yaml(workbench: Workbench) -> None:
    project = workbench.new_project("other-config", template="example-sklearn")
    (project.path / "mlgate.yaml").rename(project.path / OTHER_CONFIG)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "the churn model's config under its own name")
    env = _env(workbench, project)
    tracking = "--tracking-uri sqlite:///mlflow.db"
    config = f"--config {OTHER_CONFIG}"

    def gate(command: str, expected: int = 0) -> str:
        done = _run(project, f"mlgate {command}", env)
        output = done.stdout + done.stderr
        assert done.returncode == expected, f"mlgate {command} exited {done.returncode}:\n{output[-5000:]}"
        assert "Traceback" not in output, output[-5000:]
        return output

    # Without --config nothing is found, and the message says where it looked.
    assert "mlgate.yaml" in gate("check", expected=2)
    gate(f"check {config}")
    gate(f"env ensure {config}")
    gate(f"lint {config}")
    gate(f"validate-data {config}")
    found = MODEL_URI.findall(gate(f"train {config} {tracking}"))
    assert found, "train printed no model-uri"
    model = found[-1]
    tested = gate(f"test-model {config} --model {model} {tracking}")
    assert "passed" in tested
    compressed = gate(f"compress {config} --model {model} {tracking}")
    selected = re.search(r"selected \S+ (models:/m-\w+)", compressed)
    assert selected, compressed[-3000:]
    gate(f"registry register {config} --model-uri {selected[1]} {tracking}")
    gate(f"registry promote {config} {tracking}")
    history = gate(f"registry history {config} {tracking}")
    assert "promote" in history
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (make test installs it): the traffic gate is not run")
    models = f"--stable models:/{MODEL}@champion --canary models:/{MODEL}@champion"
    gate(f"traffic up {config} {models} {tracking}")
    try:
        status = gate(f"traffic status {config}")
        assert "stable" in status and "ready" in status, status[-3000:]
    finally:
        gate(f"traffic down {config}")
    assert os.listdir(project.path)  # the project is still there, with what the gates wrote
