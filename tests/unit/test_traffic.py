"""`mlgate traffic` without nginx: the weights a user may ask for, the `traffic:` config, the nginx config mlgate
writes, and the `command` backend's contract (what a hook receives, a failing hook, a hanging hook killed with
its process group, the KServe recipe of docs/serving-and-traffic.md), each through the real CLI where a user
would meet it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlgate import cli
from mlgate.config import TrafficConfig, load_config
from mlgate.errors import ConfigError, InputError, ToolError
from mlgate.statefile import alive
from mlgate.traffic import Split, backend_for
from mlgate.traffic.command import CommandTraffic
from mlgate.traffic.nginx import Layout, Proxy, find_nginx, prefix_folder, render

ROOT = Path(__file__).resolve().parents[2]
MLGATE = Path(sys.executable).parent / "mlgate"
HOOK = Path(__file__).parent / "traffic_hooks" / "record_weights.sh"
KSERVE_RECIPE = ROOT / "docs" / "recipes" / "kserve-canary.sh"


def project(root: Path, traffic: str) -> Path:
    config = root / "mlgate.yaml"
    config.write_text(f"version: 1\nproject: demo\ntraffic:\n{traffic}", encoding="utf-8")
    return config


def command_project(root: Path, run: str, timeout_s: float = 20) -> Path:
    return project(root, f"  backend: command\n  command:\n    run: {json.dumps(run)}\n    timeout_s: {timeout_s}\n")


def mlgate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def records(path: Path) -> list[dict[str, str]]:
    """The hook's record: one dict per run."""
    runs: list[dict[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        key, value = line.split("=", 1)
        if key == "argv":
            runs.append({})
        runs[-1][key] = value
    return runs


# --- weights --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stable", "canary", "says"),
    [
        (100, 1, "sum to 101, not 100"),
        (50, 40, "sum to 90, not 100"),
        (-10, 110, "the stable weight -10 is not a whole percentage from 0 to 100"),
        (0, 101, "the canary weight 101 is not a whole percentage"),
    ],
)
def test_weights_outside_0_100_or_not_summing_to_100_are_refused(stable: int, canary: int, says: str) -> None:
    with pytest.raises(InputError, match=says) as refused:
        Split(stable, canary)
    assert refused.value.hint and "sum" in refused.value.hint


def test_a_weight_given_alone_leaves_the_rest_to_the_other_model_and_keeps_the_mirror() -> None:
    current = Split(90, 10, mirror=True)
    assert Split.of(canary=25, base=current) == Split(75, 25, mirror=True)
    assert Split.of(stable=60, base=current) == Split(60, 40, mirror=True)
    assert Split.of(mirror=False, base=current) == Split(90, 10, mirror=False)
    assert Split.of(canary=5, base=None) == Split(95, 5, mirror=False)
    with pytest.raises(InputError, match="canary weight 120"):
        Split.of(canary=120, base=current)
    with pytest.raises(InputError, match="sum to 110"):
        Split.of(canary=30, stable=80, base=current)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--canary", "120"), "the canary weight 120 is not a whole percentage from 0 to 100"),
        (("--canary", "-1"), "the canary weight -1 is not a whole percentage"),
        (("--stable", "80", "--canary", "30"), "the weights stable 80 and canary 30 sum to 110, not 100"),
        (("--canary", "ten"), "--canary 'ten' is not a whole percentage"),
        ((), "was given nothing to change"),
    ],
)
def test_bad_weights_on_the_command_line_exit_3_and_run_no_hook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    record = tmp_path / "record.txt"
    config = command_project(tmp_path, f"sh {HOOK} {record}")
    code, out, err = mlgate(capsys, "traffic", "set", "--config", str(config), *argv)
    assert code == 3, out + err
    assert says in out + err
    assert "hint: " in err
    assert not record.exists()


# --- config ---------------------------------------------------------------------------------------------


def test_the_defaults_are_nginx_on_8080_in_dot_mlgate_split_per_request() -> None:
    config = TrafficConfig()
    assert (config.backend, config.nginx.listen_port, config.nginx.prefix) == ("nginx", 8080, ".mlgate/traffic")
    assert (config.nginx.split, config.nginx.header) == ("request", "X-User-ID")
    assert ".mlgate/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize(
    ("traffic", "says"),
    [
        ("  backend: command\n", "backend: command needs traffic.command.run"),
        ("  backend: istio\n", "traffic.backend"),
        ("  nginx: {split: cookie}\n", "traffic.nginx.split"),
        ("  nginx: {header: 'X User'}\n", "traffic.nginx.header"),
        ("  nginx: {listen_port: 70000}\n", "traffic.nginx.listen_port"),
        ("  command: {run: hook.sh, timeout_s: 0}\n", "traffic.command.timeout_s"),
    ],
)
def test_a_wrong_traffic_section_names_the_key(tmp_path: Path, traffic: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        load_config(project(tmp_path, traffic))
    assert refused.value.line == 4 or refused.value.line == 3


def test_a_prefix_nginx_would_misread_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="would read as syntax"):
        prefix_folder("state;evil", tmp_path)


# --- the nginx config mlgate writes (checked by real nginx in test_traffic_nginx.py) ------------------------


def test_the_config_splits_per_request_id_listens_on_loopback_and_keeps_every_path_in_the_prefix(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path / "prefix")
    text = render(Proxy(8181), {"stable": 9001, "canary": 9002}, Split(75, 25), 3, layout)
    assert 'split_clients "$request_id" $mlgate_upstream {\n        25% canary;\n        * stable;' in text
    assert "listen 127.0.0.1:8181;" in text
    assert "server 127.0.0.1:9001;" in text and "server 127.0.0.1:9002;" in text
    assert "proxy_set_header X-Request-ID $mlgate_request_id;" in text
    assert "mirror /_mlgate/mirror;" not in text
    for line in text.splitlines():
        if line.strip().startswith(("pid ", "error_log ", "access_log ")) or "_temp_path " in line:
            assert f'"{layout.prefix}/' in line, line
    assert '"generation": 3' in text


def test_0_and_100_route_everything_to_one_model_and_the_mirror_copies_to_the_canary(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    ports = {"stable": 9001, "canary": 9002}
    everything_stable = render(Proxy(8181), ports, Split(100, 0, mirror=True), 1, layout)
    assert "split_clients" not in everything_stable
    assert "default stable;" in everything_stable
    assert "mirror /_mlgate/mirror;" in everything_stable
    assert "proxy_pass http://canary$request_uri;" in everything_stable
    assert "default canary;" in render(Proxy(8181), ports, Split(0, 100), 1, layout)


def test_a_header_split_is_sticky_per_header_value_and_per_request_without_it(tmp_path: Path) -> None:
    text = render(Proxy(8181, "header", "X-User-ID"), {"stable": 1, "canary": 2}, Split(50, 50), 1, Layout(tmp_path))
    assert "map $http_x_user_id $mlgate_split_key {" in text
    assert '"" $request_id;' in text
    assert 'split_clients "$mlgate_split_key" $mlgate_upstream' in text


def test_nginx_missing_from_path_is_a_tool_error_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="nginx is not installed: 'nginx' is not on PATH") as missing:
        find_nginx("nginx")
    assert missing.value.hint and "apt-get install -y nginx" in missing.value.hint


def test_traffic_up_without_nginx_exits_4_before_starting_anything(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    config = project(tmp_path, "  nginx: {listen_port: 8181}\n")
    done = subprocess.run(
        [str(MLGATE), "traffic", "up", "--config", str(config), "--stable", "models:/m@champion",
         "--canary", "models:/m@challenger"],
        capture_output=True, text=True, env={**os.environ, "PATH": str(empty)}, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 4, done.stdout + done.stderr
    assert "nginx is not installed" in done.stdout + done.stderr
    assert "hint: install nginx: `apt-get install -y nginx`" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".mlgate" / "traffic" / "state.json").exists()


def test_traffic_up_without_nginx_installs_nothing_first(tmp_path: Path) -> None:
    """A project with environment.install: the serving venv is not built (nor its libraries installed) for a stack
    whose nginx is missing."""
    config = project(tmp_path, "  nginx: {listen_port: 8181}\n")
    config.write_text(config.read_text() + "environment: {install: [mlgate-no-such-package-3c1]}\n")
    venvs = tmp_path / "venvs"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "MLGATE_VENV_ROOT": str(venvs)}
    done = subprocess.run(
        [str(MLGATE), "traffic", "up", "--config", str(config), "--stable", "models:/m@champion",
         "--canary", "models:/m@challenger"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 4, done.stdout + done.stderr
    assert "nginx is not installed: 'nginx' is not on PATH" in done.stdout + done.stderr
    assert "traffic.nginx.binary" in done.stderr and "apt-get install -y nginx" in done.stderr
    assert "installing the project environment" not in done.stdout + done.stderr
    assert not venvs.exists(), sorted(p.name for p in venvs.iterdir())


def test_set_and_status_without_a_stack_up_say_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project(tmp_path, f"  nginx: {{prefix: {tmp_path / 'prefix'}}}\n")
    for operation in (("set", "--canary", "10"), ("status",)):
        code, out, err = mlgate(capsys, "traffic", *operation, "--config", str(config))
        assert code == 3, out + err
        assert f"no traffic stack is up in {tmp_path / 'prefix'}" in out + err
        assert "hint: start one with `mlgate traffic up --stable URI --canary URI`" in err
    code, out, _ = mlgate(capsys, "traffic", "down", "--config", str(config))
    assert code == 0 and "nothing to stop" in out


def test_traffic_up_with_the_command_backend_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = command_project(tmp_path, "true")
    code, out, err = mlgate(capsys, "traffic", "up", "--config", str(config), "--stable", "a", "--canary", "b")
    assert code == 3, out + err
    assert "traffic.backend: command" in out + err


# --- the command backend: the contract a hook relies on ----------------------------------------------------


def test_the_hook_gets_the_weights_as_arguments_and_environment_and_the_split_survives_the_process(
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.txt"
    config = command_project(tmp_path, f"sh {HOOK} {record}")
    base = [str(MLGATE), "traffic"]
    steps = [("set", "--canary", "25"), ("set", "--mirror", "on"), ("set", "--stable", "100", "--canary", "0")]
    for step in steps:
        # Each step is a new process: the split it starts from is the state file's, not memory.
        done = subprocess.run([*base, *step, "--config", str(config)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "router now sends 0% to the canary" in done.stdout
    assert records(record) == [
        {"argv": "75 25 off", "stable": "75", "canary": "25", "mirror": "off", "cwd": str(tmp_path)},
        {"argv": "75 25 on", "stable": "75", "canary": "25", "mirror": "on", "cwd": str(tmp_path)},
        {"argv": "100 0 on", "stable": "100", "canary": "0", "mirror": "on", "cwd": str(tmp_path)},
    ]
    status = subprocess.run(
        [*base, "status", "--json", "--config", str(config)], capture_output=True, text=True, check=True
    )
    assert json.loads(status.stdout) == {"backend": "command", "split": {"stable": 100, "canary": 0, "mirror": True}}


def test_applying_the_split_in_force_again_runs_the_hook_and_reports_no_change(tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    backend = backend_for(load_config(command_project(tmp_path, f"sh {HOOK} {record}")).model.traffic, tmp_path)
    assert backend.apply(Split(90, 10)).changed is True
    again = backend.apply(Split(90, 10))
    assert again.changed is False  # the router may have drifted, so the hook still runs: it must be idempotent
    assert len(records(record)) == 2
    assert backend.current() == Split(90, 10)


def test_a_failing_hook_is_an_error_naming_it_and_its_output_and_the_split_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "record.txt"
    config = command_project(tmp_path, f"sh {HOOK} {record}")
    assert mlgate(capsys, "traffic", "set", "--canary", "10", "--config", str(config))[0] == 0
    failing = "sh -c 'echo cluster unreachable >&2; exit 7' set-weights"
    command_project(tmp_path, failing)
    code, out, err = mlgate(capsys, "traffic", "set", "--canary", "50", "--config", str(config))
    assert code == 4, out + err
    assert "the traffic command `sh -c 'echo cluster unreachable >&2; exit 7' set-weights` failed with exit code 7" in (
        out + err
    )
    assert "cluster unreachable" in out + err
    assert "hint: the recorded split is unchanged" in err
    settings = load_config(config).model.traffic.command
    assert settings is not None
    assert CommandTraffic.from_config(settings, tmp_path).current() == Split(90, 10)


def test_a_hanging_hook_is_killed_with_its_process_group_within_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child_pid = tmp_path / "child.pid"
    hanging = f"sh -c 'sleep 300 & echo $! > {child_pid}; wait' set-weights"
    config = command_project(tmp_path, hanging, timeout_s=1)
    started = time.monotonic()
    code, out, err = mlgate(capsys, "traffic", "set", "--canary", "10", "--config", str(config))
    took = time.monotonic() - started
    assert code == 4, out + err
    assert "did not finish within 1 s and was killed (with its process group)" in out + err
    assert "set-weights" in out + err
    assert "hint: make the command return once the router has the weights" in err
    assert took < 30  # bounded: the timeout and the kill grace, not the hook's 300 s
    sleeper = int(child_pid.read_text(encoding="utf-8"))
    deadline = time.monotonic() + 5
    while alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(sleeper), "the hook's own child outlived the timeout"


def test_a_hook_that_cannot_start_is_a_tool_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = command_project(tmp_path, "./no-such-hook.sh")
    code, out, err = mlgate(capsys, "traffic", "set", "--canary", "10", "--config", str(config))
    assert code == 4, out + err
    assert "cannot start the traffic command `./no-such-hook.sh`" in out + err


def test_the_kserve_recipe_patches_canary_traffic_percent_and_waits(tmp_path: Path) -> None:
    """The KServe hook docs/serving-and-traffic.md shows, run by mlgate against a kubectl recording its arguments."""
    recipe = KSERVE_RECIPE.read_text(encoding="utf-8")
    page = (ROOT / "docs" / "serving-and-traffic.md").read_text(encoding="utf-8")
    assert f"```sh\n{recipe}```" in page, "docs/serving-and-traffic.md's copy of the recipe is stale"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "kubectl.calls"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\n', encoding="utf-8")
    kubectl.chmod(0o755)
    backend = CommandTraffic(
        ["sh", str(KSERVE_RECIPE), "fraud-detection", "models"],
        tmp_path,
        30,
        tmp_path / "state.json",
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    backend.apply(Split(75, 25))
    patch, wait = calls.read_text(encoding="utf-8").splitlines()
    assert patch == (
        "patch inferenceservice fraud-detection --namespace models --type merge "
        '-p {"spec":{"predictor":{"canaryTrafficPercent":25}}}'
    )
    assert wait.startswith("wait --for=condition=Ready inferenceservice/fraud-detection --namespace models")
    with pytest.raises(ToolError, match=r"exit code 3.*no request mirroring"):
        backend.apply(Split(75, 25, mirror=True))
    assert backend.current() == Split(75, 25)
