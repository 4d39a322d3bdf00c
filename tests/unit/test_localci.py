"""`mlgate ci`: the act command it builds (host mode, offline, loopback only), and what it says on bad input.

act itself is not run here: a stand-in `act` script records its arguments and environment, so the
whole path of `mlgate ci` (checks, export of mlgate, event payload, log, exit code) runs offline.
The real act runs in tests/e2e, through the same `run_local_ci`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import mlgate
import pytest
from mlgate.cli import main
from mlgate.localci import act as act_module
from mlgate.localci import run as run_module
from mlgate.localci.act import ActSpec, ErrorAnnotation, act_command, error_annotations, host_environment, job_results
from mlgate.localci.pins import PINS, STANDINS_DIR
from mlgate.localci.run import event_payload, export_tree, git_state, select_workflows

REPO_ROOT = Path(__file__).resolve().parents[2]

PR_WORKFLOW = "name: PR\non:\n  pull_request:\n  workflow_dispatch:\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
TRAIN_WORKFLOW = "name: Train\non:\n  push:\n    branches: [main]\njobs:\n  a:\n    runs-on: [self-hosted, gpu]\n"


def _git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A model project with two workflows, one commit, on branch pr/x, origin on GitHub."""
    root = tmp_path / "fraud"
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "pr.yml").write_text(PR_WORKFLOW)
    (root / ".github" / "workflows" / "train.yml").write_text(TRAIN_WORKFLOW)
    (root / "mlgate.yaml").write_text("version: 1\nproject: fraud\n")
    _git(root.parent, "init", "-q", "-b", "main", str(root))
    _git(root, "remote", "add", "origin", "git@github.com:example/fraud-detection.git")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")
    _git(root, "checkout", "-q", "-b", "pr/x")
    return root


def _spec(tmp_path: Path, **changes: object) -> ActSpec:
    values: dict[str, object] = {
        "act": "/opt/act",
        "event": "pull_request",
        "workflows": tmp_path / "repo" / ".github" / "workflows" / "pr.yml",
        "event_path": tmp_path / "run" / "event.json",
        "mlgate_tree": tmp_path / "run" / "mlgate",
        "artifacts": tmp_path / "run" / "artifacts",
        "artifact_server": tmp_path / "run" / "act-artifact-server",
        "artifact_port": 40123,
        "action_cache": tmp_path / "run" / "act",
        "tool_cache": tmp_path / "cache" / "tool-cache",
        "standin_cache": tmp_path / "cache" / "standin-cache",
        "tracking_uri": "http://127.0.0.1:5001",
    }
    values.update(changes)
    return ActSpec(**values)  # type: ignore[arg-type]


def _values(command: list[str], flag: str) -> list[str]:
    return [command[index + 1] for index, part in enumerate(command) if part == flag]


# --------------------------------------------------------------------------- the act command


def test_command_runs_every_runner_label_on_this_host(tmp_path: Path) -> None:
    command = act_command(_spec(tmp_path))
    assert command[:2] == ["/opt/act", "pull_request"]
    assert set(_values(command, "-P")) == {"ubuntu-latest=-self-hosted", "self-hosted=-self-hosted", "gpu=-self-hosted"}
    assert _values(command, "-W") == [str(tmp_path / "repo" / ".github" / "workflows" / "pr.yml")]
    assert "--no-recurse" not in command  # one file
    assert _values(command, "-e") == [str(tmp_path / "run" / "event.json")]


def test_command_serves_mlgate_and_every_pinned_action_from_local_folders(tmp_path: Path) -> None:
    command = act_command(_spec(tmp_path))
    mapped = dict(value.split("=", 1) for value in _values(command, "--local-repository"))
    assert mapped[f"{mlgate.REPOSITORY}@{mlgate.RELEASE_REF}"] == str((tmp_path / "run" / "mlgate").resolve())
    for pin in PINS:
        folder = Path(mapped[f"{pin.repository}@{pin.sha}"])
        assert folder.is_absolute() and (folder / "action.yml").is_file(), f"no stand-in for {pin.repository}"
        assert folder.is_relative_to(STANDINS_DIR)
    assert "--action-offline-mode" in command  # never fetch an action


def test_command_binds_nothing_but_loopback(tmp_path: Path) -> None:
    command = act_command(_spec(tmp_path))
    text = " ".join(command)
    assert "192.0.2.2" not in text  # act's default for its cache and artifact servers
    assert "--no-cache-server" in command
    assert _values(command, "--artifact-server-addr") == ["127.0.0.1"]
    assert _values(command, "--artifact-server-port") == ["40123"]
    assert _values(command, "--artifact-server-path") == [str(tmp_path / "run" / "act-artifact-server")]
    assert set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text)) == {"127.0.0.1"}


def test_command_passes_caches_artifacts_tracking_uri_and_user_values(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        inputs={"require-gpu": "false"},
        variables={"DVC_REMOTE_URL": "/srv/dvc"},
        secrets={"HF_TOKEN": "s3cret"},
        env={"DVC_NO_ANALYTICS": "1"},
    )
    command = act_command(spec)
    assert _values(command, "--env") == [
        f"MLGATE_VENV_ROOT={tmp_path / 'cache' / 'tool-cache'}",
        f"MLGATE_STANDIN_CACHE_DIR={tmp_path / 'cache' / 'standin-cache'}",
        f"MLGATE_STANDIN_ARTIFACT_DIR={tmp_path / 'run' / 'artifacts'}",
        "DVC_NO_ANALYTICS=1",
    ]
    assert _values(command, "--secret") == ["HF_TOKEN=s3cret", "MLFLOW_TRACKING_URI=http://127.0.0.1:5001"]
    assert _values(command, "--var") == ["DVC_REMOTE_URL=/srv/dvc"]
    assert _values(command, "--input") == ["require-gpu=false"]


def test_a_tracking_uri_secret_of_the_user_wins(tmp_path: Path) -> None:
    command = act_command(_spec(tmp_path, secrets={"MLFLOW_TRACKING_URI": "https://mlflow.example"}))
    assert _values(command, "--secret") == ["MLFLOW_TRACKING_URI=https://mlflow.example"]


def test_a_folder_of_workflows_is_not_searched_recursively(tmp_path: Path) -> None:
    command = act_command(_spec(tmp_path, workflows=tmp_path / "repo" / ".github" / "workflows"))
    assert "--no-recurse" in command


def test_the_runner_sees_the_host_toolchain_not_this_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    here = str(Path(sys.executable).parent)
    env = host_environment({"PATH": os.pathsep.join([here, str(venv / "bin"), "/usr/bin"]), "VIRTUAL_ENV": str(venv)})
    assert env["PATH"].split(os.pathsep) == ["/usr/bin"]
    assert "VIRTUAL_ENV" not in env


def test_job_results_are_read_from_acts_output() -> None:
    output = (
        "[ml-ci/mlgate ML CI/lint         ] 🏁  Job succeeded\n"
        "[ml-ci/mlgate ML CI/validate-data]   ❌  Failure - Main mlgate validate-data\n"
        "[ml-ci/mlgate ML CI/validate-data] 🏁  Job failed\n"
        "Error: Job 'validate-data' failed\n"
    )
    assert job_results(output) == {"ml-ci/mlgate ML CI/lint": "succeeded", "ml-ci/mlgate ML CI/validate-data": "failed"}


def test_error_annotations_are_read_from_acts_output() -> None:
    output = (
        "[ml-ci/mlgate ML CI/lint         ]   ❗  ::error file=src/a%2Cb.py,line=3,col=8,title=ruff::F401: unused\n"
        "[ml-ci/mlgate ML CI/lint         ]   ❗  ::error title=mlgate lint::lint failed (ruff: 1)\n"
        "[ml-ci/mlgate ML CI/lint         ]   | ::error::printed by a script, not a step's annotation\n"
    )
    assert error_annotations(output) == [
        ErrorAnnotation("ml-ci/mlgate ML CI/lint", "F401: unused", file="src/a,b.py", line=3),
        ErrorAnnotation("ml-ci/mlgate ML CI/lint", "lint failed (ruff: 1)"),
    ]


# --------------------------------------------------------------------------- the stand-ins ship with the package


def test_every_standin_file_is_package_data() -> None:
    """A wheel holds what [tool.setuptools.package-data] names: every stand-in file must match a pattern."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["mlgate"]
    package = REPO_ROOT / "scripts" / "mlgate"
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    standins = {path for path in (package / "localci" / "standins").rglob("*") if path.is_file()}
    assert standins, "no stand-ins found"
    assert standins <= shipped, sorted(str(path.relative_to(package)) for path in standins - shipped)
    for pin in PINS:
        assert (STANDINS_DIR / pin.repository / "action.yml").is_file()


# --------------------------------------------------------------------------- git, workflows, event, export


def test_event_payloads_come_from_git(repo: Path) -> None:
    git = git_state(repo / ".github")  # any folder of the repository
    assert git.root == repo.resolve() and git.branch == "pr/x"
    assert git.repository == "example/fraud-detection"
    pull = event_payload("pull_request", git, pr_number=12, base_ref="main", inputs={})
    assert pull["number"] == 12 and pull["pull_request"]["number"] == 12
    assert pull["pull_request"]["head"] == {"ref": "pr/x", "sha": _git(repo, "rev-parse", "HEAD")}
    assert pull["pull_request"]["base"] == {"ref": "main"}
    assert pull["repository"]["full_name"] == "example/fraud-detection"
    dispatch = event_payload("workflow_dispatch", git, pr_number=1, base_ref="main", inputs={"repro-check": "true"})
    assert dispatch["ref"] == "refs/heads/pr/x" and dispatch["inputs"] == {"repro-check": "true"}


def test_without_a_name_every_workflow_the_event_triggers_runs(repo: Path) -> None:
    workflows = repo / ".github" / "workflows"
    assert select_workflows(repo, None, "pull_request", repo) == ((workflows / "pr.yml").resolve(),)
    assert select_workflows(repo, None, "push", repo) == ((workflows / "train.yml").resolve(),)
    assert select_workflows(repo, "pr", "pull_request", repo) == ((workflows / "pr.yml").resolve(),)


def test_export_holds_what_a_push_publishes(repo: Path, tmp_path: Path) -> None:
    (repo / ".gitignore").write_text(".venv/\n")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "big").write_text("x")
    (repo / "new.py").write_text("")  # untracked, not ignored: published by the next push
    dest = export_tree(repo, tmp_path / "export")
    assert (dest / "mlgate.yaml").is_file() and (dest / "new.py").is_file()
    assert (dest / ".github" / "workflows" / "pr.yml").is_file()
    assert not (dest / ".venv").exists() and not (dest / ".git").exists()


# --------------------------------------------------------------------------- `mlgate ci`, end to end without act


@pytest.fixture
def fake_act(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `act` beside the interpreter that records its argv, cwd and PATH, prints a failed job, exits 1."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "act-call.json"
    script = folder / "act"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv, 'cwd': os.getcwd(), 'path': os.environ['PATH']}}, open({str(record)!r}, 'w'))\n"
        "print('[ml-ci/mlgate ML CI/lint         ] 🏁  Job succeeded')\n"
        "print('[ml-ci/mlgate ML CI/validate-data]   ❗  ::error file=data/train.csv::DRIFT amount%0Apsi 0.4')\n"
        "print('[ml-ci/mlgate ML CI/validate-data] 🏁  Job failed')\n"
        "sys.exit(1)\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(act_module, "_interpreter_bin", lambda: folder)
    return record


def test_a_failed_job_fails_the_command_and_the_log_and_export_are_kept(
    repo: Path, tmp_path: Path, fake_act: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code = main([
        "ci", "pr.yml", "--project", str(repo), "--out", str(run_dir), "--cache-dir", str(tmp_path / "cache"),
        "--tracking-uri", "http://127.0.0.1:9", "--var", "DVC_REMOTE_URL=/srv/dvc", "--quiet",
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    assert "the workflow failed under act: ml-ci/mlgate ML CI/validate-data" in out + err
    assert str(run_dir / "act.log") in out + err  # the hint names the whole log
    call = json.loads(fake_act.read_text())
    assert call["cwd"] == str(repo.resolve())
    assert str(Path(sys.executable).parent) not in call["path"].split(os.pathsep)
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:9" in call["argv"]
    assert "Job failed" in (run_dir / "act.log").read_text()
    assert (run_dir / "mlgate" / "action.yml").is_file()  # mlgate exported from this checkout
    assert not (run_dir / "mlgate" / ".venv").exists()
    event = json.loads((run_dir / "event.json").read_text())
    assert event["pull_request"]["head"]["ref"] == "pr/x"
    assert "MLFLOW_TRACKING_URI=***" in (run_dir / "act-command.txt").read_text()
    assert "✅ ml-ci/mlgate ML CI/lint" in out and "❌ ml-ci/mlgate ML CI/validate-data" in out
    assert "validate-data: data/train.csv: DRIFT amount psi 0.4" in out  # the summary says why


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err


def test_a_missing_workflow_is_named_with_the_ones_there_are(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _fails(["ci", "nightly.yml", "--project", str(repo)], capsys)
    assert code == 3
    assert str(repo.resolve() / ".github" / "workflows" / "nightly.yml") in text
    assert "pr.yml (pull_request, workflow_dispatch)" in text and "train.yml (push)" in text


def test_a_workflow_the_event_does_not_trigger_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _fails(["ci", "train.yml", "--project", str(repo)], capsys)
    assert code == 3
    assert "train.yml does not run on pull_request" in text and "--event push" in text


def test_outside_a_git_repository_it_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _fails(["ci", "--project", str(tmp_path)], capsys)
    assert code == 3
    assert "is not inside a git repository" in text and "git init" in text


def test_without_act_it_names_the_extra(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(act_module, "_interpreter_bin", lambda: tmp_path / "nothing")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    run_dir = tmp_path / "run"
    code, text = _fails(["ci", "--project", str(repo), "--out", str(run_dir)], capsys)
    assert code == 4
    assert "act" in text and "pip install 'mlgate[ci]'" in text
    assert not run_dir.exists()  # every check runs before anything is written


def test_without_a_copy_of_mlgate_it_says_where_to_get_one(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run_module, "package_checkout", lambda: None)  # an installed wheel, not a checkout
    monkeypatch.delenv("MLGATE_SOURCE", raising=False)
    code, text = _fails(["ci", "--project", str(repo)], capsys)
    assert code == 3
    assert "no copy of mlgate's repository" in text and "--mlgate-source" in text and "git clone" in text


def test_a_mlgate_source_that_is_not_mlgate_is_refused(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _fails(["ci", "--project", str(repo), "--mlgate-source", str(tmp_path)], capsys)
    assert code == 3
    assert "is not a copy of mlgate's repository (no action.yml" in text


def test_the_run_folder_may_not_be_inside_the_repository(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _fails(["ci", "--project", str(repo), "--out", str(repo / "ci-run")], capsys)
    assert code == 3
    assert "inside the repository" in text
    assert not (repo / "ci-run").exists()


def test_a_secret_without_value_comes_from_the_environment_or_is_refused(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, text = _fails(["ci", "--project", str(repo), "--secret", "HF_TOKEN"], capsys)
    assert code == 3
    assert "--secret HF_TOKEN: no value given and HF_TOKEN is not set" in text


def test_without_mlflow_and_without_a_tracking_uri_it_says_what_to_install(
    repo: Path, tmp_path: Path, fake_act: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run_module, "find_mlflow", lambda: None)
    run_dir = tmp_path / "run"
    code, text = _fails(["ci", "--project", str(repo), "--out", str(run_dir)], capsys)
    assert code == 4
    assert "needs the `mlflow` package" in text and "--tracking-uri" in text
    assert not run_dir.exists() and not fake_act.exists()  # stopped before writing anything or starting act


def test_act_log_holds_the_redacted_text_the_terminal_shows(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Canary secrets a job's steps print: a --secret value, and a URI with user info no one registered.
    secret, uri_password = "canary-act-3e7c", "canary-uripw-81d0"
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "act"
    script.write_text(
        f"#!{sys.executable}\n"
        f"print('[ml-ci/mlgate ML CI/train] | token is {secret}')\n"
        f"print('[ml-ci/mlgate ML CI/train] | View run at http://bob:{uri_password}@mlflow.example:5000/#/runs/1')\n"
        "print('[ml-ci/mlgate ML CI/train] 🏁  Job failed')\n"
        "raise SystemExit(1)\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(act_module, "_interpreter_bin", lambda: folder)
    run_dir = tmp_path / "run"
    code = main([
        "ci", "pr.yml", "--project", str(repo), "--out", str(run_dir), "--cache-dir", str(tmp_path / "cache"),
        "--tracking-uri", "http://127.0.0.1:9", "--secret", f"HF_TOKEN={secret}",
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    log = (run_dir / "act.log").read_text(encoding="utf-8")
    for canary in (secret, uri_password):
        assert canary not in log and canary not in out + err
    assert "token is ***" in log and "View run at http://***@mlflow.example:5000/#/runs/1" in log
    assert all(line in out for line in log.splitlines())  # the same text the terminal showed
