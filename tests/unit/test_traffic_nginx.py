"""`mlgate traffic` with real nginx in front of two real `mlgate serve` on loopback: the observed split of each
weight within a binomial bound, reloads under locust load that fail no request, a config nginx refuses leaving the
old split serving, a mirror whose copies reach the canary and never the client, a sticky header split, and
`up`'s refusals (a port in use, a model that does not resolve). The servers count what they answered in
their own /metrics, so the split is measured where the requests land, not where nginx says it sent them."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None,
    reason="nginx is not installed: `make venv` installs it (apt-get install -y nginx); these tests need the real one",
)

import mlflow  # noqa: E402
import modeltest_models  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlgate.errors import ToolError  # noqa: E402
from mlgate.statefile import alive, command_line, free_port, port_in_use, read_state  # noqa: E402
from mlgate.traffic import Split  # noqa: E402
from mlgate.traffic import nginx as nginx_backend  # noqa: E402
from mlgate.traffic.nginx import Layout, NginxTraffic, Proxy  # noqa: E402
from modeltest_models import Logistic  # noqa: E402

MLGATE = Path(sys.executable).parent / "mlgate"
LOCUST = Path(sys.executable).parent / "locust"
ROW = pd.DataFrame({"amount": [480.0], "velocity": [4.0]})
BODY = json.dumps({"dataframe_split": ROW.to_dict(orient="split")}).encode()
UP_TIMEOUT_S = 240  # a bound for a stuck start, not a timing assertion
SIGMAS = 4.0
MAX_BODY_BYTES = 65536  # serve.max_body_bytes of the stack's mlgate.yaml; nginx's own limit stays 16 MB
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Stack:
    config: Path
    prefix: Path
    port: int
    tracking_uri: str
    scores: dict[str, float]  # what each model answers for ROW

    @property
    def state(self) -> dict[str, Any]:
        found = read_state(self.prefix / "state.json")
        assert found is not None
        return found

    def server_port(self, role: str) -> int:
        return int(self.state["upstreams"][role]["port"])

    def backend(self) -> NginxTraffic:
        return NginxTraffic("nginx", Layout(self.prefix))


def run_mlgate(
    *argv: str, env: dict[str, str] | None = None, timeout: float = UP_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLGATE), *argv], capture_output=True, text=True, timeout=timeout, check=False, env=env or None
    )


def kill_recorded(state: dict[str, Any] | None) -> None:
    """The safety net: end every process group a state file names (by pid, only if it is still ours)."""
    if not state:
        return
    pids = [int((state.get("nginx") or {}).get("pid") or 0)]
    pids += [int(upstream.get("pid") or 0) for upstream in (state.get("upstreams") or {}).values()]
    for pid in pids:
        line = command_line(pid) if pid else ""
        if pid and alive(pid) and ("nginx" in line or "mlgate" in line):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`mlgate traffic up`: fraud v1 (@champion) stable and v2 (@challenger, blind to the amount) canary."""
    root = tmp_path_factory.mktemp("traffic-nginx")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    scores: dict[str, float] = {}
    for role, alias, model in (("stable", "champion", Logistic()), ("canary", "challenger", Logistic(amount_weight=0))):
        output = model.predict(None, ROW)
        scores[role] = float(output["score"][0])
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                code_paths=[modeltest_models.__file__],
                signature=infer_signature(ROW, output),
                input_example=ROW,
                pip_requirements=["mlflow"],
            )
        version = mlflow.register_model(info.model_uri, "fraud")
        client.set_registered_model_alias("fraud", alias, version.version)
    mlflow.set_tracking_uri(previous)
    assert scores["stable"] != scores["canary"]
    port = free_port()
    config = root / "mlgate.yaml"
    config.write_text(
        f"version: 1\nproject: demo\nserve: {{max_body_bytes: {MAX_BODY_BYTES}}}\n"
        f"traffic:\n  nginx: {{listen_port: {port}}}\n",
        encoding="utf-8",
    )
    found = Stack(config, root / ".mlgate" / "traffic", port, uri, scores)
    up = run_mlgate(
        "traffic", "up", "--config", str(config), "--stable", "models:/fraud@champion",
        "--canary", "models:/fraud@challenger", "--tracking-uri", uri,
    )  # fmt: skip
    state = read_state(found.prefix / "state.json")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield found
    finally:
        state = read_state(found.prefix / "state.json") or state
        run_mlgate("traffic", "down", "--config", str(config), timeout=120)
        kill_recorded(state)


def post(port: int, headers: dict[str, str] | None = None) -> tuple[int, str, str, float | None]:
    """(status, which upstream nginx says answered, the request id, the score) of one prediction."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=BODY,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with LOCAL.open(request, timeout=30) as answer:
            score = float(json.loads(answer.read())["predictions"][0]["score"])
            return answer.status, answer.headers.get("X-Mlgate-Upstream", ""), answer.headers["X-Request-ID"], score
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("X-Mlgate-Upstream", ""), "", None
    except OSError as error:
        return 0, type(error).__name__, "", None


def send(port: int, count: int, threads: int = 4) -> list[tuple[int, str, str, float | None]]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: post(port), range(count)))


def answered(stack: Stack, role: str) -> int:
    """How many predictions the server answered with 200, by its own Prometheus counter."""
    with LOCAL.open(f"http://127.0.0.1:{stack.server_port(role)}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    pattern = re.compile(r"^mlgate_serve_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)
    return sum(int(float(value)) for labels, value in pattern.findall(text) if 'status="200"' in labels)


def counts(stack: Stack) -> dict[str, int]:
    return {role: answered(stack, role) for role in ("stable", "canary")}


def within_binomial(observed: int, trials: int, percent: int) -> bool:
    p = percent / 100
    if p in (0.0, 1.0):
        return observed == trials * p
    return abs(observed - trials * p) <= SIGMAS * math.sqrt(trials * p * (1 - p)) + 1


# --- up and status ------------------------------------------------------------------------------------------


def test_up_serves_both_models_on_loopback_and_status_reports_them(stack: Stack) -> None:
    done = run_mlgate("traffic", "status", "--json", "--config", str(stack.config), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout)
    assert found["healthy"] is True
    assert found["url"] == f"http://127.0.0.1:{stack.port}"
    assert found["generation"] == found["served_generation"]
    assert {role: (up["ready"], up["detail"]) for role, up in found["upstreams"].items()} == {
        "stable": (True, "fraud v1"),
        "canary": (True, "fraud v2"),
    }
    conf = (stack.prefix / "conf" / "nginx.conf").read_text(encoding="utf-8")
    assert re.findall(r"^\s*listen (\S+);", conf, re.MULTILINE) == [f"127.0.0.1:{stack.port}"]
    assert "server 127.0.0.1:" in conf and "0.0.0.0" not in conf
    status, upstream, request_id, score = post(stack.port)
    assert (status, upstream) == (200, "stable") and len(request_id) == 32  # nginx's $request_id, sent upstream
    assert score == pytest.approx(stack.scores["stable"])


# --- weights ------------------------------------------------------------------------------------------------

# 0 % and 100 % are exact, so fewer requests show them; the others get 400 each (1 800 in all).
WEIGHTS = [(0, 100), (1, 400), (5, 400), (25, 400), (50, 400), (100, 100)]


def test_each_weight_gives_the_observed_split_within_a_binomial_bound(stack: Stack) -> None:
    backend = stack.backend()
    report = []
    for percent, trials in WEIGHTS:
        backend.apply(Split(100 - percent, percent))
        before = counts(stack)
        answers = send(stack.port, trials)
        after = counts(stack)
        landed = {role: after[role] - before[role] for role in after}
        said = Counter(upstream for _, upstream, _, _ in answers)
        report.append((percent, trials, landed["canary"]))
        assert [status for status, *_ in answers] == [200] * trials
        assert landed["stable"] + landed["canary"] == trials, landed
        assert said["canary"] == landed["canary"], (said, landed)  # nginx's header agrees with the servers' counts
        assert within_binomial(landed["canary"], trials, percent), report
        for _, upstream, _, score in answers:
            assert score == pytest.approx(stack.scores[upstream])  # the answer is that model's, not the other's


def test_setting_the_split_in_force_again_changes_nothing(stack: Stack) -> None:
    first = run_mlgate("traffic", "set", "--canary", "20", "--config", str(stack.config), timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    generation = stack.state["generation"]
    again = run_mlgate("traffic", "set", "--canary", "20", "--config", str(stack.config), timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stable 80% / canary 20%, mirror off (unchanged)" in again.stdout
    assert stack.state["generation"] == generation


# --- reloads, refusals ----------------------------------------------------------------------------------------


# A locust user that POSTs the module's one-row prediction back to back; an answer counts as failed unless it is
# a 200 with predictions from one of the two upstreams. It asks for keep-alive, as locust does by default: the
# stack's nginx answers each request with `Connection: close` (traffic.nginx.client_keepalive: false), because a
# reload makes the old workers close their idle keep-alive connections and a POST sent on one as it closes would
# fail unanswered (HTTPConnectionClosed: 3 to 8 in 1,300 requests here with keep-alive on).
LOCUSTFILE = """
from locust import FastHttpUser, constant, task

BODY = {body!r}


class Predictor(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 30.0

    @task
    def invocations(self):
        headers = {{"Content-Type": "application/json"}}
        with self.client.post("/invocations", data=BODY, headers=headers, catch_response=True) as answer:
            upstream = answer.headers.get("X-Mlgate-Upstream") if answer.headers else None
            if answer.status_code != 200:
                answer.failure(f"HTTP {{answer.status_code}} from {{upstream}}: {{getattr(answer, 'error', None)!r}}")
            elif b'"predictions"' not in (answer.content or b"") or upstream not in ("stable", "canary"):
                answer.failure(f"a 200 without predictions or upstream ({{upstream}})")
            else:
                answer.success()
"""
LOCUST_RUN_TIME_S = 60  # a bound for a stuck run: the test stops locust once the reloads are done
LOCUST_USERS = 6


def locust_summary(prefix: Path) -> tuple[int, int, list[dict[str, str]]]:
    """(requests, failures) of locust's Aggregated row in PREFIX_stats.csv, and the rows of PREFIX_failures.csv."""
    with (prefix.parent / f"{prefix.name}_stats.csv").open(encoding="utf-8", newline="") as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    with (prefix.parent / f"{prefix.name}_failures.csv").open(encoding="utf-8", newline="") as handle:
        failures = list(csv.DictReader(handle))
    return int(total["Request Count"]), int(total["Failure Count"]), failures


def test_ten_reloads_under_locust_load_fail_no_request(stack: Stack, tmp_path: Path) -> None:
    backend = stack.backend()
    backend.apply(Split(90, 10))
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE.format(body=BODY), encoding="utf-8")
    prefix, output = tmp_path / "load", tmp_path / "locust.log"
    before = answered(stack, "stable")
    argv = [
        str(LOCUST), "-f", str(locustfile), "--headless", "-u", str(LOCUST_USERS), "-r", str(LOCUST_USERS),
        "--run-time", f"{LOCUST_RUN_TIME_S}s", "--stop-timeout", "10", "--host", f"http://127.0.0.1:{stack.port}",
        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    with output.open("wb") as sink:
        # Its own process group, so the finally below ends it and its greenlets' sockets whatever happens.
        locust = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    applied = []
    try:
        # The stable server always takes a share of the load (and never a mirror copy): its counter shows the
        # load has arrived, and how much of it landed while the reloads ran.
        arrived = wait_for(lambda: answered(stack, "stable") - before >= 20 or locust.poll() is not None, 60.0)
        assert arrived and locust.poll() is None, "locust sent no load: " + output.read_text(errors="replace")[-2000:]
        first = answered(stack, "stable")
        for step in range(10):
            applied.append(backend.apply(Split(90, 10) if step % 2 else Split(60, 40, mirror=step % 4 == 0)))
        last = answered(stack, "stable")
        time.sleep(1.5)  # locust rewrites its CSV files each second: they then hold every request of the reloads
        locust.send_signal(signal.SIGTERM)  # a graceful stop: its users finish their requests, it writes its summary
        code = locust.wait(timeout=60)
    finally:
        if locust.poll() is None:
            os.killpg(locust.pid, signal.SIGKILL)
            locust.wait()
    log = output.read_text(errors="replace")
    requests, failures, failed = locust_summary(prefix)
    assert all(step.changed for step in applied)
    assert last - first >= 10, f"the reloads did not happen under load: {last - first} answers during them"
    assert requests >= last - before > 0, (requests, last - before)  # locust counted what the servers answered
    assert (failures, failed) == (0, []), f"{failures} of {requests} requests failed: {failed[:5]}"
    assert code == 0, f"locust exited with {code} (a failure or an error in its users): {log[-2000:]}"


def test_a_config_nginx_refuses_leaves_the_old_split_serving(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = stack.backend()
    backend.apply(Split(100, 0))
    generation = stack.state["generation"]
    conf = (stack.prefix / "conf" / "nginx.conf").read_text(encoding="utf-8")
    original = nginx_backend.render

    def broken(*args: Any, **kwargs: Any) -> str:
        return original(*args, **kwargs).replace("http {", "http {\n    mlgate_no_such_directive on;", 1)

    monkeypatch.setattr(nginx_backend, "render", broken)
    with pytest.raises(ToolError) as refused:
        backend.apply(Split(0, 100))
    assert "nginx refused the new configuration" in refused.value.message
    assert 'unknown directive "mlgate_no_such_directive"' in refused.value.message
    assert "the previous one keeps serving" in refused.value.message
    assert stack.state["generation"] == generation and backend.current() == Split(100, 0)
    assert (stack.prefix / "conf" / "nginx.conf").read_text(encoding="utf-8") == conf
    assert nginx_backend.served_generation(stack.port) == generation
    answers = send(stack.port, 40)
    assert {(status, upstream) for status, upstream, _, _ in answers} == {(200, "stable")}


# --- mirror ---------------------------------------------------------------------------------------------------


def wait_for(condition: Any, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_mirror_copies_requests_to_the_canary_whose_answers_never_reach_the_client(stack: Stack) -> None:
    backend = stack.backend()
    backend.apply(Split(100, 0, mirror=True))
    before = counts(stack)
    answers = send(stack.port, 60)
    assert {(status, upstream) for status, upstream, _, _ in answers} == {(200, "stable")}
    assert all(score == pytest.approx(stack.scores["stable"]) for *_, score in answers)
    assert wait_for(lambda: counts(stack)["canary"] - before["canary"] == 60), counts(stack)
    assert counts(stack)["stable"] - before["stable"] == 60
    # The copy carries the request id of the answered request: the two servers' logs join on it.
    canary_log = Path(stack.state["upstreams"]["canary"]["log"])

    def mirrored() -> set[str]:
        lines = canary_log.read_text(encoding="utf-8").splitlines()
        return {json.loads(line)["request_id"] for line in lines if '"event": "prediction"' in line}

    answered_ids = {request_id for _, _, request_id, _ in answers}
    assert len(answered_ids) == 60
    assert wait_for(lambda: answered_ids <= mirrored()), answered_ids - mirrored()

    # With a share of its own, the canary gets copies of only what it does not answer: each request once.
    backend.apply(Split(50, 50, mirror=True))
    before = counts(stack)
    answers = send(stack.port, 100)
    assert [status for status, *_ in answers] == [200] * 100
    live = Counter(upstream for _, upstream, _, _ in answers)
    assert wait_for(lambda: counts(stack)["canary"] - before["canary"] == 100), (live, counts(stack), before)
    assert counts(stack)["stable"] - before["stable"] == live["stable"]
    backend.apply(Split(100, 0, mirror=False))


# --- sticky split ----------------------------------------------------------------------------------------------


def test_a_header_split_sends_each_user_to_one_model(stack: Stack) -> None:
    state = stack.state
    layout = Layout(stack.prefix)
    ports = {role: stack.server_port(role) for role in ("stable", "canary")}
    sticky = Proxy(stack.port, "header", "X-User-ID")
    pid = int(state["nginx"]["pid"])
    nginx_backend.reload("nginx", layout, pid, sticky, ports, Split(50, 50), 1000)
    try:
        seen: dict[str, set[str]] = {}
        for user in range(40):
            for _ in range(3):
                status, upstream, _, _ = post(stack.port, {"X-User-ID": f"user-{user}"})
                assert status == 200
                seen.setdefault(f"user-{user}", set()).add(upstream)
        assert all(len(models) == 1 for models in seen.values()), seen
        assert Counter(next(iter(models)) for models in seen.values()).keys() == {"stable", "canary"}
    finally:
        # Back to the recorded settings (a new generation, so the wait cannot mistake the sticky config for it).
        stack.backend().apply(Split(90, 10))


# --- what `up` refuses ------------------------------------------------------------------------------------------


def test_both_servers_refuse_a_body_past_serve_max_body_bytes_and_count_it(stack: Stack) -> None:
    rows = pd.concat([ROW] * 4000, ignore_index=True)  # about 80 kB: under nginx's limit, over the servers'
    body = json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()
    assert MAX_BODY_BYTES < len(body) < 16 << 20
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        LOCAL.open(request, timeout=30)
    assert refused.value.code == 413
    role = refused.value.headers["X-Mlgate-Upstream"]
    message = json.loads(refused.value.read())["message"]
    assert message == (
        f"the body is larger than this server's limit of {MAX_BODY_BYTES} bytes (serve.max_body_bytes): "
        f"it is {len(body)} bytes"
    )
    with LOCAL.open(f"http://127.0.0.1:{stack.server_port(role)}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert re.search(r'^mlgate_serve_errors_total\{[^}]*status="413"[^}]*\} 1\.0$', text, re.MULTILINE), text


def test_up_refuses_a_second_stack_and_a_port_in_use(stack: Stack, tmp_path: Path) -> None:
    args = ("--stable", "models:/fraud@champion", "--canary", "models:/fraud@challenger")
    again = run_mlgate("traffic", "up", "--config", str(stack.config), *args, timeout=60)
    assert again.returncode == 3, again.stdout + again.stderr
    assert "a traffic stack is already up in" in again.stdout + again.stderr
    other = tmp_path / "mlgate.yaml"
    other.write_text(f"version: 1\nproject: other\ntraffic:\n  nginx: {{listen_port: {stack.port}}}\n")
    taken = run_mlgate("traffic", "up", "--config", str(other), *args, timeout=60)
    assert taken.returncode == 3, taken.stdout + taken.stderr
    assert f"port {stack.port} on 127.0.0.1 is in use" in taken.stdout + taken.stderr
    assert "hint: set traffic.nginx.listen_port" in taken.stderr
    assert not (tmp_path / ".mlgate" / "traffic" / "state.json").exists()


def test_a_model_that_does_not_resolve_stops_up_and_leaves_nothing_running(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "mlgate.yaml"
    config.write_text(f"version: 1\nproject: other\ntraffic:\n  nginx: {{listen_port: {port}}}\n")
    done = run_mlgate(
        "traffic", "up", "--config", str(config), "--stable", "models:/fraud@champion",
        "--canary", "models:/no-such-model@challenger", "--tracking-uri", stack.tracking_uri,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "the canary model models:/no-such-model@challenger cannot be served: cannot load model" in (
        done.stdout + done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".mlgate" / "traffic" / "state.json").exists()
    assert not port_in_use(port)
    leftovers = [
        pid
        for pid in (int(name) for name in os.listdir("/proc") if name.isdigit())
        if alive(pid) and "no-such-model@challenger" in command_line(pid)
    ]
    stable_log = (tmp_path / ".mlgate" / "traffic" / "logs" / "stable.log").read_text(encoding="utf-8")
    assert not leftovers, leftovers
    assert "models:/fraud@champion" in stable_log  # the stable server did start, and was stopped with the other


# --- down -----------------------------------------------------------------------------------------------------


def test_down_stops_nginx_and_both_servers_and_frees_the_ports(stack: Stack) -> None:
    state = stack.state
    pids = [int(state["nginx"]["pid"])] + [int(up["pid"]) for up in state["upstreams"].values()]
    ports = [stack.port] + [stack.server_port(role) for role in ("stable", "canary")]
    done = run_mlgate("traffic", "down", "--config", str(stack.config), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nginx (pid" in done.stdout and "stable server" in done.stdout and "canary server" in done.stdout
    assert not any(alive(pid) for pid in pids)
    assert not any(port_in_use(port) for port in ports)
    assert not (stack.prefix / "state.json").exists()
    gone = run_mlgate("traffic", "status", "--config", str(stack.config), timeout=60)
    assert gone.returncode == 3 and "no traffic stack is up" in gone.stdout + gone.stderr
