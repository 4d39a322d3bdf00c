"""docs/local-runs.md's "same gates locally", as written and in order, in one copy of the example project
(every gate under a config not named mlgate.yaml: tests/e2e/test_sklearn_project.py).

The docs' block is read from the page itself, so a command that stops working there, or a step the page
gains, is tested as the page shows it. Two kinds of lines are not run: `pip install` (the tests' venv is
the install) and the plain-pytest pair at the end, which needs the project's own libraries installed
beside mlgate (tests/unit/test_modeltest.py runs the plugin that way on its own models).
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import MODEL_URI, Workbench, by_hand, by_hand_env

DOCS = Path(__file__).resolve().parents[2] / "docs" / "local-runs.md"
SECTION = "## The same gates locally"
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


def test_the_docs_local_sequence_runs_as_written_in_one_project_folder(workbench: Workbench) -> None:
    steps = _sequence()
    assert any(command.startswith("mlgate compress") for command, _ in steps), steps
    project = workbench.new_project("local-sequence")
    env = by_hand_env(workbench, project)
    model_uri = None
    for command, comment in steps:
        if "models:/m-..." in command:
            assert model_uri, f"no model-uri printed by a train step before {command!r}"
            command = command.replace("models:/m-...", model_uri)
        done = by_hand(project, command, env)
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
