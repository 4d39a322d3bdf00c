"""Serving benchmark (issue 12): `mlgate serve` against `mlflow models serve`, the p99 nginx adds, reloads under load.

Everything runs on this machine, on loopback, in one run:

1. The example model: the example project (data from `fraud.generate`, trained by `mlgate train --profile quick`
   with `python -m fraud.train`, as bench_compress does) logged to a throwaway sqlite MLflow store and registered
   as `fraud-detection` (@champion and @challenger on the same version), so every server loads the same
   `models:/fraud-detection@champion`.
2. Throughput and latency: `mlgate serve` and `mlflow models serve --env-manager local`, one worker each, all
   up at once (an idle one costs next to nothing), loaded in turn by locust (headless, FastHttpUser with
   keep-alive connections, `--users` users
   spawned at once, at most `--max-rps` requests a second in all, `--seconds` a cell, stats reset once every user
   runs) with POST /invocations of one row and of 100 rows of the example's test.csv in `dataframe_split`, the
   same bytes for every server. The one-row cells run mlgate first and the 100-row cells last (ABBA) so that a
   drift of the machine's load weighs on every server alike. Aim: mlgate at >= 1.0x mlflow's throughput at an
   equal or better p99. Where this mlgate's `serve` has `--batch-max-rows` (opportunistic batching, on by
   default), a third server runs with it at 0 and gets the same cells and the same comparison. The percentiles
   of these cells are locust's: whole milliseconds below 100 ms, enough for servers tens of ms apart.
3. p99 added by nginx: `mlgate traffic up` (nginx in front of two `mlgate serve` with their defaults) at 100/0,
   then the one-row payload straight to the stable server's port and through nginx's, measured by a small client
   of this file (see `probe`): locust's percentiles are rounded to whole milliseconds, too coarse for an aim of
   <= 1 ms.
4. Reloads under load: locust through nginx while the stack's backend applies 90/10 and 50/50 in turn,
   `--reloads` times (in process: `NginxTraffic.apply`, what `mlgate traffic set` calls, without a Python start
   per reload competing with the load for the CPUs); every failed request counts. Aim: 0. The reloads are
   shown to have happened under load by the requests locust completed between the first and the last, and by
   nginx serving the generation the last one wrote.
5. `mlgate traffic down`.

Every process started here runs in its own process group and is ended by it in a `finally`. The bench exits 0
when it ran, whether or not the aims were met (the table says which); non-zero only when it could not run.
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlgate.statefile import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import bench_parser, command_line, machine, outside_env, write_record

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL_NAME = "fraud-detection"
STABLE_URI = f"models:/{MODEL_NAME}@champion"
CANARY_URI = f"models:/{MODEL_NAME}@challenger"
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache", "mlruns", "mlflow.db",
    "mlgate-reports", "mlgate-data-docs", "data",
)  # fmt: skip
READY_TIMEOUT_S = 180  # a bound for a stuck start, not a figure
WARM_UP_REQUESTS = 20  # per server and payload, before the timed cells (MLflow's first prediction is slow)
BATCH_ROWS = 100
BATCH_OFF = "--batch-max-rows"  # `mlgate serve`'s opportunistic batching, off at 0, where this mlgate has it
# The aims.
AIM_THROUGHPUT_RATIO = 1.0  # mlgate / mlflow requests per second, at an equal or better p99
AIM_NGINX_P99_MS = 1.0
AIM_RELOAD_FAILURES = 0
RELOAD_SPLITS = ((90, 10), (50, 50))
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LOCUSTFILE = '''\
"""bench_serve's load: POST /invocations of one payload, back to back, at most BENCH_USER_RPS a user."""

import os
from pathlib import Path

from locust import FastHttpUser, constant_throughput, task

BODY = Path(os.environ["BENCH_BODY"]).read_bytes()
HEADERS = {"Content-Type": "application/json"}


class Scorer(FastHttpUser):
    wait_time = constant_throughput(float(os.environ["BENCH_USER_RPS"]))

    @task
    def invocations(self) -> None:
        with self.client.post("/invocations", data=BODY, headers=HEADERS, catch_response=True) as answer:
            if answer.status_code != 200 or b'"predictions"' not in (answer.content or b""):
                # status 0 is a connection error (reset, closed): name it, there is no body to quote
                error = getattr(answer, "error", None)
                answer.failure(f"status {answer.status_code}: {error!r}" if error else
                               f"status {answer.status_code}: {(answer.content or b'')[:200]!r}")
'''


class BenchError(Exception):
    """The bench itself could not run (a server that never got ready, locust that wrote no stats)."""


# --- the example model ------------------------------------------------------------------------------------


def run(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - started


def example_model(root: Path, tracking_uri: str, env: dict[str, str]) -> dict[str, Any]:
    """Train the example project's network into the store, register it; its test.csv and what was done."""
    project = Path(shutil.copytree(REPO_ROOT / "example-project", root / "fraud", ignore=COPY_IGNORE))
    project_env = {**env, "PYTHONPATH": str(project / "src")}
    run([str(BIN / "python"), "-m", "fraud.generate", "--params", "params.yaml", "--out", "data"], project, project_env)
    path = project / "mlgate.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config.pop("environment", None)  # train in this venv, not a project venv built for the bench
    config["data"]["dvc"] = False
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    command = [str(BIN / "mlgate"), "train", "--config", str(path), "--profile", "quick", "--device", "cpu",
               "--tracking-uri", tracking_uri, "--no-dvc-pull",
               "--outputs-file", str(project / "train.json")]  # fmt: skip
    train_s = run(command, project, project_env)
    logged = json.loads((project / "train.json").read_text(encoding="utf-8"))["model-uri"]

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    version = mlflow.register_model(logged, MODEL_NAME).version
    client = MlflowClient(tracking_uri, tracking_uri)
    for alias in ("champion", "challenger"):
        client.set_registered_model_alias(MODEL_NAME, alias, version)
    columns = mlflow.models.get_model_info(STABLE_URI).signature.inputs.input_names()
    return {
        "logged_uri": logged,
        "version": str(version),
        "train_s": train_s,
        "columns": columns,
        "test_csv": project / "data" / "test.csv",
    }


def payloads(test_csv: Path, columns: list[str], root: Path) -> dict[int, Path]:
    """The bodies of POST /invocations, one row and BATCH_ROWS rows, as files locust and the probe read."""
    import pandas as pd

    frame = pd.read_csv(test_csv).dropna(subset=columns)[columns]  # device_type is missing from a few rows
    found = {}
    for rows in (1, BATCH_ROWS):
        split = json.loads(frame.head(rows).to_json(orient="split", index=False))
        found[rows] = root / f"body-{rows}.json"
        found[rows].write_text(json.dumps({"dataframe_split": split}), encoding="utf-8")
    return found


# --- servers ----------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    ready_path: str
    process: subprocess.Popen[bytes]
    log: Path
    ready_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, started: float) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited ({self.process.returncode}) before it was ready:\n{tail(self.log)}"
                )
            try:
                with LOCAL.open(self.url + self.ready_path, timeout=2) as answer:
                    if answer.status == 200:
                        self.ready_s = time.perf_counter() - started
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise BenchError(f"{self.name} was not ready within {READY_TIMEOUT_S} s:\n{tail(self.log)}")

    def stop(self) -> None:
        stop_group(self.process)


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else "(no log)"


def stop_group(process: subprocess.Popen[Any]) -> None:
    """End the process group `process` leads (started with start_new_session): TERM, then KILL after 15 s."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def spawn(name: str, argv: list[str], port: int, ready_path: str, env: dict[str, str], root: Path) -> Server:
    log = root / f"{name.replace(' ', '-')}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, port, ready_path, process, log)


@contextmanager
def direct_servers(env: dict[str, str], root: Path, batching: bool) -> Iterator[dict[str, Server]]:
    """`mlgate serve` (as it ships, and with batching off where it batches) and `mlflow models serve` of the same
    URI, one worker each, all ready."""
    servers: dict[str, Server] = {}
    started = time.perf_counter()
    try:
        for name, extra in (("mlgate", []), *((("mlgate-unbatched", [BATCH_OFF, "0"]),) if batching else ())):
            port = free_port()
            argv = [str(BIN / "mlgate"), "serve", "--model", STABLE_URI, "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1", *extra]  # fmt: skip
            servers[name] = spawn(" ".join(["mlgate serve", *extra]), argv, port, "/ready", env, root)
        port = free_port()
        argv = [str(BIN / "mlflow"), "models", "serve", "-m", STABLE_URI, "--env-manager", "local",
                "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
        servers["mlflow"] = spawn("mlflow models serve", argv, port, "/ping", env, root)
        for server in servers.values():
            server.wait_ready(started)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def warm_up(url: str, body: bytes) -> None:
    for _ in range(WARM_UP_REQUESTS):
        request = urllib.request.Request(url + "/invocations", data=body, headers={"Content-Type": "application/json"})
        with LOCAL.open(request, timeout=60) as answer:
            answer.read()


# --- locust -----------------------------------------------------------------------------------------------


@dataclass
class Load:
    """locust's Aggregated row of one cell (percentiles as locust rounds them: whole ms below 100 ms)."""

    cell: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    capped: bool  # the rate reached --max-rps: the server could have done more
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadSettings:
    users: int
    seconds: int
    max_rps: float
    root: Path
    env: dict[str, str]

    def locustfile(self) -> Path:
        path = self.root / "locustfile.py"
        if not path.exists():
            path.write_text(LOCUSTFILE, encoding="utf-8")
        return path


def start_locust(
    settings: LoadSettings, host: str, body: Path, name: str, run_time_s: int, reset: bool
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    prefix = settings.root / "locust" / name
    prefix.parent.mkdir(exist_ok=True)
    env = {**settings.env, "BENCH_BODY": str(body), "BENCH_USER_RPS": str(settings.max_rps / settings.users)}
    argv = [str(BIN / "locust"), "-f", str(settings.locustfile()), "--headless", "-u", str(settings.users),
            "-r", str(settings.users), "-t", f"{run_time_s}s", "-H", host, "--csv", str(prefix), "--only-summary",
            "--loglevel", "WARNING", "--stop-timeout", "10", *(["--reset-stats"] if reset else [])]  # fmt: skip
    log = prefix.with_suffix(".log")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, prefix, log


def finish_locust(
    settings: LoadSettings, process: subprocess.Popen[bytes], prefix: Path, log: Path, cell: str, timeout_s: float
) -> Load:
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(process)
        raise BenchError(f"locust ({cell}) ran past {timeout_s:.0f} s:\n{tail(log)}") from None
    stats = Path(f"{prefix}_stats.csv")
    if code not in (0, 1) or not stats.exists():  # 1: some requests failed, which the cell reports
        raise BenchError(f"locust ({cell}) exited {code} without its stats:\n{tail(log)}")
    with stats.open(encoding="utf-8") as handle:
        row = next(line for line in csv.DictReader(handle) if line["Name"] == "Aggregated")
    rps = float(row["Requests/s"])

    def ms(key: str) -> float:
        return float(row[key]) if row[key] not in ("N/A", "") else float("nan")

    return Load(cell, int(row["Request Count"]), int(row["Failure Count"]), rps, ms("50%"), ms("99%"),
                ms("Average Response Time"), capped=rps >= 0.95 * settings.max_rps)  # fmt: skip


def locust(settings: LoadSettings, host: str, body: Path, cell: str) -> Load:
    name = cell.replace(" ", "-").replace(",", "")
    process, prefix, log = start_locust(settings, host, body, name, settings.seconds, reset=True)
    load = finish_locust(settings, process, prefix, log, cell, settings.seconds + 60)
    print(
        f"{cell}: {load.rps:.0f} req/s, p50 {load.p50_ms:g} ms, p99 {load.p99_ms:g} ms, {load.failures} failed",
        flush=True,
    )
    return load


# --- nginx ------------------------------------------------------------------------------------------------


def mlgate_cli(*argv: str, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        [str(BIN / "mlgate"), *argv], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"mlgate {' '.join(argv)} ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


@contextmanager
def nginx_stack(root: Path, tracking_uri: str, env: dict[str, str]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """`mlgate traffic up` at 100/0 (stable @champion, canary @challenger: the same version); its config and state."""
    from mlgate.statefile import alive, command_line, read_state

    project = root / "traffic"
    project.mkdir()
    config = project / "mlgate.yaml"
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    traffic = {"nginx": {"listen_port": free_port(), "binary": binary}}
    config.write_text(yaml.safe_dump({"version": 1, "project": "bench-serve", "traffic": traffic}), encoding="utf-8")
    state_file = project / ".mlgate" / "traffic" / "state.json"
    state: dict[str, Any] | None = None
    try:
        mlgate_cli("traffic", "up", "--config", str(config), "--stable", STABLE_URI, "--canary", CANARY_URI,
                   "--weight", "0", "--tracking-uri", tracking_uri, env=env)  # fmt: skip
        state = read_state(state_file)
        assert state is not None
        yield config, state
    finally:
        state = read_state(state_file) or state
        try:
            mlgate_cli("traffic", "down", "--config", str(config), env=env, timeout=120)
        finally:  # the safety net: whatever the state file names and still runs nginx or mlgate
            pids = [int(((state or {}).get("nginx") or {}).get("pid") or 0)]
            pids += [int(upstream.get("pid") or 0) for upstream in ((state or {}).get("upstreams") or {}).values()]
            for pid in pids:
                if pid and alive(pid) and any(word in command_line(pid) for word in ("nginx", "mlgate")):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def percentile(samples: list[float], point: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[point - 1] if len(samples) > 1 else samples[0]


def probe(ports: dict[str, int], body: bytes, threads: int, requests: int, seconds: float) -> dict[str, Any]:
    """Exact latencies, in ms, of the same POST sent to each port in turn by `threads` keep-alive clients.

    Each thread alternates between the ports request by request, so a change in the machine's load (this
    machine is shared) weighs on every path alike; it stops after `requests` requests a port or `seconds`."""
    samples: dict[str, list[float]] = {name: [] for name in ports}
    failures: dict[str, int] = dict.fromkeys(ports, 0)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    per_thread = -(-requests // threads)
    headers = {"Content-Type": "application/json"}

    def client() -> None:
        connections = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for name, port in ports.items()}
        mine: dict[str, list[float]] = {name: [] for name in ports}
        failed = dict.fromkeys(ports, 0)
        try:
            for _ in range(per_thread):
                if time.monotonic() >= deadline:
                    break
                for name, connection in connections.items():
                    started = time.perf_counter()
                    try:
                        connection.request("POST", "/invocations", body=body, headers=headers)
                        answer = connection.getresponse()
                        answer.read()
                        ok = answer.status == 200
                    except (OSError, http.client.HTTPException):
                        ok = False
                        connection.close()  # the next request reconnects
                    if ok:
                        mine[name].append((time.perf_counter() - started) * 1000)
                    else:
                        failed[name] += 1
        finally:
            for connection in connections.values():
                connection.close()
            with lock:
                for name in ports:
                    samples[name] += mine[name]
                    failures[name] += failed[name]

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    found: dict[str, Any] = {}
    for name, values in samples.items():
        if not values:
            raise BenchError(f"no request to {name} (port {ports[name]}) succeeded")
        found[name] = {
            "requests": len(values),
            "failures": failures[name],
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "mean_ms": statistics.fmean(values),
            "wall_s": wall,
        }
    return found


def reloads_under_load(settings: LoadSettings, config: Path, port: int, body: Path, reloads: int) -> Load:
    """locust through nginx while the backend applies RELOAD_SPLITS in turn `reloads` times; locust's count."""
    from mlgate.config import load_config
    from mlgate.traffic import Split, backend_for
    from mlgate.traffic.nginx import served_generation

    loaded = load_config(config)
    backend = backend_for(loaded.model.traffic, loaded.root)
    generation_before = served_generation(port) or 0
    # A bound, not the length: locust is stopped (SIGTERM, which still writes its stats) once the reloads are done.
    bound_s = settings.seconds + 30 + 5 * reloads
    cell = f"{reloads} reloads via nginx"
    process, prefix, log = start_locust(settings, f"http://127.0.0.1:{port}", body, "reloads", bound_s, reset=False)
    times: list[tuple[float, float]] = []
    try:
        time.sleep(3)  # every user runs and requests flow before the first reload
        for number in range(reloads):
            stable, canary = RELOAD_SPLITS[number % len(RELOAD_SPLITS)]
            began = time.time()
            backend.apply(Split(stable, canary))
            times.append((began, time.time()))
        time.sleep(2)  # and still flow after the last
        under_load = process.poll() is None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    load = finish_locust(settings, process, prefix, log, cell, 60)
    generation_after = served_generation(port) or 0
    seconds = history(Path(f"{prefix}_stats_history.csv"))
    during = requests_between(seconds, times[0][0], times[-1][1])
    load.extra = {
        "reloads": len(times),
        "splits": [list(split) for split in RELOAD_SPLITS],
        "reload_s": [end - began for began, end in times],
        "reloads_wall_s": times[-1][1] - times[0][0],
        "locust_running_after_last_reload": under_load,
        "requests_during_reloads": during,
        # When each failure happened, in whole seconds from the first reload (history has one row a second).
        "failures_at_s": failure_seconds(seconds, times[0][0]),
        "nginx_generation": [generation_before, generation_after],
        "confirmed": under_load and during > 0 and generation_after == generation_before + reloads,
        "failure_messages": failure_messages(Path(f"{prefix}_failures.csv")),
    }
    print(
        f"{cell}: {load.requests} requests, {load.failures} failed, {during} completed during the reloads "
        f"({load.extra['reloads_wall_s']:.1f} s), nginx generation {generation_before} -> {generation_after}",
        flush=True,
    )
    return load


def history(path: Path) -> list[tuple[int, int, int]]:
    """(unix second, requests, failures so far) of each second of locust's history."""
    with path.open(encoding="utf-8") as handle:
        return [(int(row["Timestamp"]), int(row["Total Request Count"]), int(row["Total Failure Count"]))
                for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]  # fmt: skip


def requests_between(rows: list[tuple[int, int, int]], first: float, last: float) -> int:
    """Requests locust completed from the second before `first` to the second after `last`."""
    before = max((count for stamp, count, _ in rows if stamp <= first), default=0)
    after = min((count for stamp, count, _ in rows if stamp >= last + 1), default=max(row[1] for row in rows))
    return after - before


def failure_seconds(rows: list[tuple[int, int, int]], first: float) -> list[int]:
    """The seconds, from the first reload, of locust's history in which requests failed (one entry a failure)."""
    found: list[int] = []
    previous = 0
    for stamp, _, failures in rows:
        found += [int(stamp - first)] * (failures - previous)
        previous = max(previous, failures)
    return found


def failure_messages(path: Path) -> list[str]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        return [f"{row['Occurrences']}x {row['Error']}" for row in csv.DictReader(handle)]


# --- the table --------------------------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(loads: dict[str, Load], comparisons: list[dict[str, Any]], nginx: dict[str, Any], reload: Load) -> str:
    header = ["cell", "requests", "req/s", "p50 ms", "p99 ms", "failed", "aim", "met?"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---:|---:|---|---|"]

    def add(*cells: str) -> None:
        lines.append("| " + " | ".join(cells) + " |")

    for rows in (1, BATCH_ROWS):
        for key, load in loads.items():
            if key.endswith(f" {rows}"):
                add(load.cell, f"{load.requests:,}", f"{load.rps:.1f}{' (capped)' if load.capped else ''}",
                    f"{load.p50_ms:g}", f"{load.p99_ms:g}", str(load.failures), "—", "—")  # fmt: skip
        for comparison in (found for found in comparisons if found["rows"] == rows):
            ours = loads[f"{comparison['server']} {rows}"].cell.removesuffix(f", {rows} rows").removesuffix(", 1 row")
            add(f"{ours} / mlflow, {rows} row{'s' if rows > 1 else ''}", "", f"{comparison['throughput_ratio']:.2f}x",
                f"{comparison['p50_delta_ms']:+g}", f"{comparison['p99_delta_ms']:+g}", "",
                f"≥ {AIM_THROUGHPUT_RATIO}x at equal or better p99", met(comparison["met"]))  # fmt: skip
    for path in ("direct", "nginx"):
        figures = nginx[path]
        add(f"{path} to a stable `mlgate serve`, 1 row (probe)", f"{figures['requests']:,}",
            f"{figures['requests'] / figures['wall_s']:.1f}", f"{figures['p50_ms']:.2f}", f"{figures['p99_ms']:.2f}",
            str(figures["failures"]), "—", "—")  # fmt: skip
    add("added by nginx", "", "", f"{nginx['added_p50_ms']:+.2f}", f"{nginx['added_p99_ms']:+.2f}", "",
        f"p99 ≤ {AIM_NGINX_P99_MS} ms", met(nginx["met"]))  # fmt: skip
    confirmed = "" if reload.extra["confirmed"] else " (NOT confirmed under load)"
    add(f"{reload.cell}{confirmed}, 1 row", f"{reload.requests:,}", f"{reload.rps:.1f}", f"{reload.p50_ms:g}",
        f"{reload.p99_ms:g}", str(reload.failures), f"{AIM_RELOAD_FAILURES} failed",
        met(reload.failures <= AIM_RELOAD_FAILURES and reload.extra["confirmed"]))  # fmt: skip
    return "\n".join(lines)


def compare(loads: dict[str, Load], name: str, rows: int) -> dict[str, Any]:
    """`name` against mlflow models serve on the payload of `rows` rows, and the issue's aim."""
    ours, theirs = loads[f"{name} {rows}"], loads[f"mlflow {rows}"]
    ratio = ours.rps / theirs.rps
    return {"server": name, "rows": rows, "throughput_ratio": ratio, "p50_delta_ms": ours.p50_ms - theirs.p50_ms,
            "p99_delta_ms": ours.p99_ms - theirs.p99_ms,
            "met": ratio >= AIM_THROUGHPUT_RATIO and ours.p99_ms <= theirs.p99_ms}  # fmt: skip


def main() -> int:
    parser = bench_parser(__doc__, "serve")
    parser.add_argument("--seconds", type=int, default=20, help="locust's run time of each cell, and the probe's bound")
    parser.add_argument("--users", type=int, default=8, help="locust users, all spawned at once")
    parser.add_argument("--max-rps", type=float, default=2000, help="locust's bound on requests a second, all users")
    parser.add_argument(
        "--probe-threads",
        type=int,
        default=1,
        help="clients of the nginx-vs-direct probe (default 1: no request waits behind another, so the difference "
        "is what nginx adds, not queueing)",
    )
    parser.add_argument("--probe-requests", type=int, default=2000, help="probe requests a path (direct, nginx)")
    parser.add_argument("--reloads", type=int, default=20, help="nginx reloads under load")
    args = parser.parse_args()

    from mlgate.mlflowio import no_telemetry

    no_telemetry()  # before MLflow is imported
    env = outside_env()
    # `mlflow models serve` execs `uvicorn` from PATH; Debian's nginx is in /usr/sbin.
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}{os.pathsep}/usr/sbin", DVC_NO_ANALYTICS="1")
    no_telemetry(env)
    root = Path(tempfile.mkdtemp(prefix="mlgate-bench-serve-"))
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    settings = LoadSettings(args.users, args.seconds, args.max_rps, root, env)
    total = time.perf_counter()
    # The batching of `mlgate serve` is being added alongside this bench: measured off and on once it is there.
    batching = BATCH_OFF in subprocess.run([str(BIN / "mlgate"), "serve", "--help"], capture_output=True, text=True,
                                           env=env, check=False).stdout  # fmt: skip
    try:
        model = example_model(root, tracking_uri, env)
        print(
            f"example model: {model['logged_uri']} as {STABLE_URI} (v{model['version']}), trained in "
            f"{model['train_s']:.1f} s",
            flush=True,
        )
        bodies = payloads(model["test_csv"], model["columns"], root)
        loads: dict[str, Load] = {}
        with direct_servers(env, root, batching) as servers:
            startup = {name: server.ready_s for name, server in servers.items()}
            name_of = {name: server.name for name, server in servers.items()}
            print("ready: " + ", ".join(f"{name} in {seconds:.1f} s" for name, seconds in startup.items()), flush=True)
            for rows, body in bodies.items():
                for server in servers.values():
                    warm_up(server.url, body.read_bytes())
            # mlgate first for one row and last for BATCH_ROWS (ABBA): a drift of the shared machine's load weighs
            # on every server alike.
            order = list(servers)
            for rows, names in ((1, order), (BATCH_ROWS, order[::-1])):
                for name in names:
                    loads[f"{name} {rows}"] = locust(settings, servers[name].url, bodies[rows], f"{name} {rows}")
                    loads[f"{name} {rows}"].cell = f"{servers[name].name}, {rows} row{'s' if rows > 1 else ''}"
        comparisons = [compare(loads, name, rows) for rows in (1, BATCH_ROWS) for name in order if name != "mlflow"]
        with nginx_stack(root, tracking_uri, env) as (config, state):
            nginx_port = int(state["proxy"]["listen_port"])
            ports = {"direct": int(state["upstreams"]["stable"]["port"]), "nginx": nginx_port}
            one_row = bodies[1].read_bytes()
            for port in ports.values():
                warm_up(f"http://127.0.0.1:{port}", one_row)
            nginx: dict[str, Any] = probe(ports, one_row, args.probe_threads, args.probe_requests, args.seconds)
            nginx["added_p50_ms"] = nginx["nginx"]["p50_ms"] - nginx["direct"]["p50_ms"]
            nginx["added_p99_ms"] = nginx["nginx"]["p99_ms"] - nginx["direct"]["p99_ms"]
            nginx["met"] = nginx["added_p99_ms"] <= AIM_NGINX_P99_MS
            print(f"nginx adds p50 {nginx['added_p50_ms']:+.2f} ms, p99 {nginx['added_p99_ms']:+.2f} ms", flush=True)
            reload = reloads_under_load(settings, config, nginx_port, bodies[1], args.reloads)
    except BenchError as error:
        print(f"bench_serve: {error}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total_s = time.perf_counter() - total

    print()
    print(
        f"{args.users} locust users, ≤ {args.max_rps:g} req/s, {args.seconds} s a cell; probe: "
        f"{args.probe_threads} client thread(s); {os.cpu_count()} CPUs; one worker per server"
    )
    print(table(loads, comparisons, nginx, reload))
    print(f"total {total_s:.0f} s")
    payload = {
        "benchmark": "serve",
        **machine(),
        "settings": command_line(args),
        "model": {
            "uri": STABLE_URI,
            "logged_uri": model["logged_uri"],
            "version": model["version"],
            "train_s": model["train_s"],
            "columns": model["columns"],
        },
        "servers": {
            "commands": {name: f"{name_of[name]}, one worker" for name in startup},
            "ready_s": startup,
            "mlgate_batching_flag": batching,
        },
        "aims": {
            "throughput_ratio": AIM_THROUGHPUT_RATIO,
            "nginx_added_p99_ms": AIM_NGINX_P99_MS,
            "reload_failures": AIM_RELOAD_FAILURES,
        },
        "percentiles": "locust cells: locust's, whole ms below 100 ms; nginx: exact, from bench_serve's probe",
        "cells": [asdict(load) for load in loads.values()],
        "comparisons": comparisons,
        "nginx": nginx,
        "reloads": asdict(reload),
        "total_s": total_s,
    }
    write_record(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
