"""Canary rollout benchmark (issue 13): how fast and how surely `mlgate rollout` rolls back a bad challenger,
and how often it rolls back a good one, with the example model under a fixed load.

Everything runs on this machine, on loopback, in one run:

1. The example model: the example project trained by `mlgate train --profile quick` into a throwaway sqlite
   MLflow store (bench_serve's `example_model`), registered as `fraud-detection` v1 (@champion, the stable
   model of every rollout) and the same logged model again as v2 (the good challenger: identical scores, its
   own server). The bad challengers are real logged pyfunc models that wrap the example model (`Harmful`,
   the logged example model an artifact of each): `erroring` raises on a request holding a row whose
   amount's hundredths are below 30 (about 30 % of one-row requests), `slow` sleeps 0.25 s before every
   call, `shifted` adds 0.3 to every probability and never errors (as tests/unit/rollout_models.py's).
2. Per challenger (good, erroring, slow, shifted): `mlgate traffic up --stable models:/fraud-detection/1
   --canary models:/fraud-detection/N` once, both servers warmed up, then client threads post one row of
   the example's test.csv each through nginx at a fixed rate (`--rate` requests a second in all, `--clients`
   threads, bounded in time and count) while the rollouts run one after another; then `mlgate traffic down`.
3. Each rollout is `mlgate rollout start`'s controller run in process (mlgate.rollout.controller.Controller
   built as commands/rollout.py builds it: the plan from mlgate.yaml's `rollout:`, the scrape provider, the
   nginx backend, the stack's servers checked to serve the two versions), with a `promote` that answers
   "promoted" and leaves the registry alone: a real promotion would move @champion and the next rollout of
   the same version would be refused. The registry gate's own cost is bench_registry's. Every rollout
   starts from 100/0 (the backend applies it first: a good rollout ends at 0/100).
4. Figures. For each bad rollout: the step it was rolled back at (aim: the first, every time), the
   canary's requests in the failing analysis against `min_samples` (aim: at most 2x), the time to detect
   (from the step's `started_at` to the failing analysis' `at`: the record's fields) and the failing
   checks. For the good challenger: false rollbacks over `--good-runs` rollouts (aim: 0, at least 20 runs)
   and each rollout's time. Across everything: requests the clients saw fail for any reason other than the
   model's own error (mlgate serve's 500 "the model failed to predict"): failed by the switches (aim: 0).

The plan: profile `test` (1 s interval, 4 s bake, 30 s deadline), steps `--steps` (default 25,100),
`min_samples` 40 and `max_latency_ratio` 4: this machine runs both servers, nginx, the load and other work
on few CPUs, and two identical models' latencies differ by more than the production default (1.5x) for
reasons of their own; the slow challenger is 10x and more. Timings are indicative on a shared machine.

Every process started here runs in its own process group and is ended in a `finally` (`mlgate traffic
down`, then by pid whatever the stack's state file names and still runs). The bench exits 0 when it ran,
whether or not the aims were met (the table says which); non-zero only when it could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlflow.pyfunc import PythonModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve  # the example model, the CLI runner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench_serve import BIN, BenchError, mlgate_cli
from mlgate.statefile import free_port
from rollout_models import outcome  # what a client saw: ok, the model's error, or the switch's

from tests.benchmarks._common import bench_parser, command_line, machine, outside_env, write_record

MODEL_NAME = bench_serve.MODEL_NAME
STABLE_VERSION = "1"
BAD_KINDS = ("erroring", "slow", "shifted")
# The checks that should name each harm (the record's failing checks are shown whatever they are).
EXPECTED_CHECKS = {
    "erroring": {"error_rate", "error_rate_vs_stable"},
    "slow": {"latency_vs_stable", "p99_latency"},
    "shifted": {"score_psi", "score_ks"},
}
NOT_PROMOTED = "benchmark: every step passed; the registry is left alone"
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BOUND_S = 600  # a bound for a stuck load or rollout, not a figure
WARM_UP_REQUESTS = 20  # per server, straight to its port, before the first rollout of a stack
# The aims.
AIM_STEP_INDEX = 0  # rolled back at the first step
AIM_SAMPLE_RATIO = 2.0  # canary requests at detection / min_samples
AIM_FALSE_ROLLBACKS = 0
AIM_MIN_GOOD_RUNS = 20
AIM_SWITCH_FAILURES = 0


class Harmful(PythonModel):  # type: ignore[misc]
    """The example model (the artifact `inner`), harmful in one way: erroring, slow or shifted.

    Pickled with the logged model (cloudpickle keeps a class of `__main__` by value), so the servers load it
    without this file."""

    def __init__(self, kind: str, delay_s: float = 0.25, error_share: float = 0.3, shift: float = 0.3) -> None:
        assert kind in BAD_KINDS, kind
        self.kind = kind
        self.delay_s = delay_s
        self.error_share = error_share
        self.shift = shift
        self.inner: Any = None

    def load_context(self, context: Any) -> None:
        import mlflow.pyfunc

        self.inner = mlflow.pyfunc.load_model(context.artifacts["inner"])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import numpy as np

        if self.kind == "erroring":
            hundredths = np.round(model_input["amount"].to_numpy(dtype=float) * 100).astype(int) % 100
            if (hundredths < self.error_share * 100).any():
                raise ValueError("cannot score this amount (a broken feature transform)")
        if self.kind == "slow":
            time.sleep(self.delay_s)
        output = self.inner.predict(model_input)
        if self.kind == "shifted":
            output = (output + self.shift).clip(upper=1.0)
        return output


# --- the models -------------------------------------------------------------------------------------------


def models(root: Path, tracking_uri: str, env: dict[str, str]) -> dict[str, Any]:
    """The example model as v1 (@champion) and v2 (good), the three wrappers after it; what was done."""
    import mlflow
    import pandas as pd

    example = bench_serve.example_model(root, tracking_uri, env)  # v1, @champion and @challenger
    assert example["version"] == STABLE_VERSION, example
    logged = example["logged_uri"]
    versions = {"good": str(mlflow.register_model(logged, MODEL_NAME).version)}
    signature = mlflow.models.get_model_info(logged).signature
    # `mlgate serve` is ready after a warm-up prediction on the input example: one the erroring model scores.
    frame = pd.read_csv(example["test_csv"]).dropna(subset=example["columns"])[example["columns"]]
    example_row = frame[(frame["amount"] * 100).round().astype(int) % 100 >= 50].head(1)
    started = time.perf_counter()
    for kind in BAD_KINDS:
        # MLflow warns that `Any` type hints give no schema: the signature is the example model's.
        with mlflow.start_run(run_name=f"bench-rollout-{kind}"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=Harmful(kind),
                artifacts={"inner": logged},
                signature=signature,
                input_example=example_row,
                pip_requirements=["mlflow"],
            )
        versions[kind] = str(mlflow.register_model(info.model_uri, MODEL_NAME).version)
    return {**example, "versions": versions, "wrappers_s": time.perf_counter() - started}


def bodies(test_csv: Path, columns: list[str], count: int) -> list[bytes]:
    """One-row POST /invocations bodies of the example's test.csv (`dataframe_split`), `count` at most."""
    import pandas as pd

    frame = pd.read_csv(test_csv).dropna(subset=columns)[columns].head(count)
    found = []
    for start in range(len(frame)):
        split = json.loads(frame.iloc[start : start + 1].to_json(orient="split", index=False))
        found.append(json.dumps({"dataframe_split": split}).encode())
    return found


# --- the load ---------------------------------------------------------------------------------------------


@dataclass
class Load:
    """`clients` threads posting one row each to nginx at `rate` requests a second in all (each thread paced,
    never catching up in a burst), until stopped or BOUND_S; every outcome counted."""

    port: int
    rows: list[bytes]
    rate: float
    clients: int
    outcomes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def post(self, body: bytes) -> str:
        return outcome(self.port, body)

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        interval = self.clients / self.rate
        due = time.monotonic() + rng.uniform(0, interval)  # spread the threads over the first interval
        deadline = time.monotonic() + BOUND_S
        for _ in range(int(self.rate * BOUND_S)):
            now = time.monotonic()
            if self.stop.wait(max(0.0, due - now)) or now > deadline:
                return
            due = max(due + interval, time.monotonic())  # behind (a slow answer): the next at once, no burst
            outcome = self.post(rng.choice(self.rows))
            with self.lock:
                self.outcomes[outcome] += 1

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.outcomes)

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.client, args=(seed,), daemon=True) for seed in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def switch_failures(outcomes: Counter[str]) -> dict[str, int]:
    return {outcome: n for outcome, n in outcomes.items() if outcome not in ("ok", "model error")}


# --- the stack and the rollouts ---------------------------------------------------------------------------


def write_config(
    project: Path, steps: list[int], min_samples: int, max_latency_ratio: float, shadow: bool = False
) -> Path:
    config = {
        "version": 1,
        "project": "bench-rollout",
        "registry": {"model": MODEL_NAME},
        "traffic": {"nginx": {"listen_port": free_port(), "binary": shutil.which("nginx") or "/usr/sbin/nginx"}},
        "rollout": {
            "profile": "test",
            "steps": steps,
            "shadow": shadow,
            "thresholds": {"min_samples": min_samples, "max_latency_ratio": max_latency_ratio},
        },
    }
    path = project / "mlgate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def stack(config: Path, canary: str, tracking_uri: str, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """`mlgate traffic up`: v1 stable, version `canary` the canary at weight 0; its state. Down after, and by pid
    whatever the state file names and still runs nginx or mlgate."""
    from mlgate.statefile import alive, command_line, read_state

    state_file = config.parent / ".mlgate" / "traffic" / "state.json"
    state: dict[str, Any] | None = None
    try:
        mlgate_cli("traffic", "up", "--config", str(config), "--stable", f"models:/{MODEL_NAME}/{STABLE_VERSION}",
                   "--canary", f"models:/{MODEL_NAME}/{canary}", "--weight", "0", "--tracking-uri", tracking_uri,
                   env=env)  # fmt: skip
        state = read_state(state_file)
        if state is None:
            raise BenchError(f"`mlgate traffic up` left no state file at {state_file}")
        yield state
    finally:
        state = read_state(state_file) or state
        try:
            mlgate_cli("traffic", "down", "--config", str(config), env=env, timeout=120)
        finally:
            pids = [int(((state or {}).get("nginx") or {}).get("pid") or 0)]
            pids += [int(upstream.get("pid") or 0) for upstream in ((state or {}).get("upstreams") or {}).values()]
            for pid in pids:
                if pid and alive(pid) and any(word in command_line(pid) for word in ("nginx", "mlgate")):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def warm_up(state: dict[str, Any], rows: list[bytes]) -> None:
    """A few requests straight to each server (a model's first predictions are slow); the erroring one's
    refusals are expected."""
    for upstream in (state.get("upstreams") or {}).values():
        for body in rows[:WARM_UP_REQUESTS]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{upstream['port']}/invocations", data=body,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            try:
                with LOCAL.open(request, timeout=60) as answer:
                    answer.read()
            except urllib.error.HTTPError as error:
                error.read()


class Rollouts:
    """What commands/rollout.py builds for `mlgate rollout start`, built once per stack."""

    def __init__(self, config: Path) -> None:
        from mlgate.config import load_config
        from mlgate.metrics import open_provider
        from mlgate.rollout.analysis import Thresholds
        from mlgate.rollout.controller import Plan, RolloutState
        from mlgate.traffic import backend_for

        self.loaded = load_config(config)
        settings = self.loaded.model.rollout
        metrics = settings.metrics
        self.plan = Plan.build(
            settings.steps,
            shadow=settings.shadow,
            interval_s=settings.timing("interval_s"),
            bake_s=settings.timing("bake_s"),
            deadline_s=settings.timing("deadline_s"),
            thresholds=Thresholds(**settings.thresholds.model_dump()),
            false_alarm_budget=settings.thresholds.false_alarm_budget,
            max_failures=metrics.max_failures,
        )
        self.provider = open_provider(metrics.provider, metrics.prometheus_url, metrics.timeout_s)
        self.backend = backend_for(self.loaded.model.traffic, self.loaded.root)
        self.state = RolloutState(self.loaded.root / settings.state_dir)

    def run(self, canary: str) -> dict[str, Any]:
        """One rollout of version `canary` against v1 from 100/0; its decision record."""
        from mlgate.commands.rollout import _servers  # the CLI's check: the stack serves these two versions
        from mlgate.rollout.controller import Controller
        from mlgate.traffic import Split

        self.backend.apply(Split(100, 0))
        stable_ref, canary_ref = _servers(self.loaded, MODEL_NAME, STABLE_VERSION, canary)
        controller = Controller(
            plan=self.plan,
            backend=self.backend,
            provider=self.provider,
            stable=stable_ref,
            canary=canary_ref,
            state=self.state,
            model=MODEL_NAME,
            promote=lambda: (True, NOT_PROMOTED),
            say=lambda line: None,
        )
        return controller.start()


def figures(kind: str, number: int, record: dict[str, Any], min_samples: int, outcomes: Counter[str]) -> dict[str, Any]:
    """One rollout's figures from its decision record."""
    steps = record["steps"]
    found: dict[str, Any] = {
        "kind": kind,
        "run": number,
        "rollout": record["id"],
        "canary_version": record["canary"]["version"],
        "outcome": record["outcome"],
        "reason": record["reason"],
        "duration_s": record["ended_at"] - record["started_at"],
        "steps": [
            {"name": step["name"], "verdict": step["verdict"], "analyses": len(step["analyses"])} for step in steps
        ],
        "load": dict(outcomes),
        "switch_failures": sum(switch_failures(outcomes).values()),
    }
    failed = next((step for step in steps if step["verdict"] == "fail"), None)
    if record["outcome"] != "rolled-back" or failed is None:
        return found | {"rolled_back_at": None}
    last = failed["analyses"][-1]
    canary_requests = (last.get("canary") or {}).get("requests")
    return found | {
        "rolled_back_at": {"index": failed["index"], "name": failed["name"]},
        "canary_requests": canary_requests,
        "stable_requests": (last.get("stable") or {}).get("requests"),
        "sample_ratio": canary_requests / min_samples if canary_requests is not None else None,
        "pairs": (last.get("pairs") or {}).get("pairs"),  # a shadow step's paired predictions
        "detect_s": last["at"] - failed["started_at"],
        "analyses": len(failed["analyses"]),
        "failing_checks": [check["metric"] for check in last.get("checks", []) if check["verdict"] == "fail"]
        or (["metrics read"] if "error" in last else ["deadline"]),
    }


def run_challenger(
    kind: str, runs: int, *, config: Path, version: str, rows: list[bytes], args: argparse.Namespace,
    tracking_uri: str, env: dict[str, str],
) -> tuple[list[dict[str, Any]], Counter[str], float]:  # fmt: skip
    """`runs` rollouts of `kind`'s version on one stack under load; their figures, the load's outcomes, the
    stack's start time."""
    started = time.perf_counter()
    results = []
    with stack(config, version, tracking_uri, env) as state:
        up_s = time.perf_counter() - started
        warm_up(state, rows)
        rollouts = Rollouts(config)
        with Load(int(state["proxy"]["listen_port"]), rows, args.rate, args.clients) as load:
            time.sleep(1)  # every client runs before the first step
            for number in range(1, runs + 1):
                before = load.snapshot()
                record = rollouts.run(version)
                outcomes = load.snapshot()
                outcomes.subtract(before)
                found = figures(kind, number, record, rollouts.plan.thresholds.min_samples, +outcomes)
                results.append(found)
                at = found["rolled_back_at"]
                where = f"rolled back at step {at['name']}" if at else found["outcome"]
                detail = (
                    f" after {found['detect_s']:.1f} s, {found['canary_requests']:g} canary requests: "
                    f"{', '.join(found['failing_checks'])}"
                    if at
                    else ""
                )
                print(f"{kind} #{number} (v{version}): {where}{detail} ({found['duration_s']:.1f} s)", flush=True)
            time.sleep(0.5)  # the last split's requests answered
        total = load.snapshot()
    return results, total, up_s


# --- the table --------------------------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def spread(values: list[float], unit: str = "", digits: int = 1) -> str:
    if not values:
        return "—"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f}{unit} ({low:.{digits}f} to {high:.{digits}f})"


def summarise(kind: str, results: list[dict[str, Any]], min_samples: int) -> dict[str, Any]:
    rolled = [found for found in results if found["rolled_back_at"] is not None]
    if kind == "good":
        false = [found for found in results if found["outcome"] != "promoted"]
        return {
            "runs": len(results),
            "false_rollbacks": len(false),
            "false_rollback_reasons": [found["reason"] for found in false],
            "duration_s": [found["duration_s"] for found in results],
            "met": len(false) <= AIM_FALSE_ROLLBACKS and len(results) >= AIM_MIN_GOOD_RUNS,
        }
    first = [found for found in rolled if found["rolled_back_at"]["index"] == AIM_STEP_INDEX]
    ratios = [found["sample_ratio"] for found in rolled if found["sample_ratio"] is not None]
    checks = Counter(check for found in rolled for check in found["failing_checks"])
    return {
        "runs": len(results),
        "rolled_back": len(rolled),
        "at_first_step": len(first),
        "canary_requests": [found["canary_requests"] for found in rolled],
        "min_samples": min_samples,
        "sample_ratio": ratios,
        "detect_s": [found["detect_s"] for found in rolled],
        "failing_checks": dict(checks),
        "expected_checks_named": all(set(found["failing_checks"]) & EXPECTED_CHECKS[kind] for found in rolled),
        "met_first_step": len(first) == len(results),
        "met_sample_ratio": bool(ratios) and len(ratios) == len(results) and max(ratios) <= AIM_SAMPLE_RATIO,
    }


def table(summary: dict[str, dict[str, Any]], switches: dict[str, int], requests: int) -> str:
    header = ["challenger", "runs", "rolled back at step 1", "canary requests at detection: median (range)",
              "time to detect s: median (range)", "failing checks", "aim", "met?"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---|---|---|---|---|"]
    for kind in BAD_KINDS:
        if kind not in summary:
            continue
        found = summary[kind]
        ratios = found["sample_ratio"]
        checks = ", ".join(f"{name} {n}" for name, n in sorted(found["failing_checks"].items()))
        lines.append(
            f"| {kind} | {found['runs']} | {found['at_first_step']}/{found['runs']} | "
            f"{spread([float(n) for n in found['canary_requests']], digits=0)} "
            f"(max {max(ratios, default=float('nan')):.2f}x of {found['min_samples']}) | "
            f"{spread(found['detect_s'])} | {checks} | step 1 every time, ≤ {AIM_SAMPLE_RATIO:g}x | "
            f"{met(found['met_first_step'])}, {met(found['met_sample_ratio'])} |"
        )
    good = summary["good"]
    lines.append(
        f"| good | {good['runs']} | {good['false_rollbacks']} false rollback(s) | — | "
        f"rollout {spread(good['duration_s'])} | — | {AIM_FALSE_ROLLBACKS} over ≥ {AIM_MIN_GOOD_RUNS} runs | "
        f"{met(good['met'])} |"
    )
    failed = sum(switches.values())
    named = ", ".join(f"{name} {n}" for name, n in switches.items()) or "none"
    lines.append(
        f"| switches (all stacks) | {requests:,} requests | — | — | — | failed by a switch: {failed} ({named}) | "
        f"{AIM_SWITCH_FAILURES} | {met(failed <= AIM_SWITCH_FAILURES)} |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = bench_parser(__doc__, "rollout")
    parser.add_argument("--good-runs", type=int, default=20, help="rollouts of the good challenger (aim: ≥ 20)")
    parser.add_argument("--bad-runs", type=int, default=5, help="rollouts of each bad challenger")
    parser.add_argument("--rate", type=float, default=60, help="requests a second through nginx, all clients")
    parser.add_argument("--clients", type=int, default=12, help="client threads (a slow answer holds one)")
    parser.add_argument("--steps", default="25,100", help="the canary's percent at each step, comma-separated")
    parser.add_argument("--shadow", action="store_true", help="a shadow step first (rollout.shadow: true)")
    parser.add_argument("--min-samples", type=int, default=40, help="rollout.thresholds.min_samples")
    parser.add_argument("--max-latency-ratio", type=float, default=4.0, help="rollout.thresholds.max_latency_ratio")
    parser.add_argument("--rows", type=int, default=2000, help="distinct test.csv rows the clients draw from")
    args = parser.parse_args()
    steps = [int(step) for step in args.steps.split(",")]

    from mlgate.errors import MlgateError
    from mlgate.mlflowio import no_telemetry

    no_telemetry()  # before MLflow is imported
    env = outside_env()
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}{os.pathsep}/usr/sbin", DVC_NO_ANALYTICS="1")
    no_telemetry(env)
    root = Path(tempfile.mkdtemp(prefix="mlgate-bench-rollout-"))
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # the in-process readers of the registry
    total = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    loads: dict[str, dict[str, int]] = {}
    stack_up_s: dict[str, float] = {}
    try:
        model = models(root, tracking_uri, env)
        versions = model["versions"]
        print(
            f"example model: {model['logged_uri']} as v{STABLE_VERSION} (stable) and v{versions['good']} (good), "
            f"trained in {model['train_s']:.1f} s; wrappers "
            + ", ".join(f"{kind} v{versions[kind]}" for kind in BAD_KINDS)
            + f" logged in {model['wrappers_s']:.1f} s",
            flush=True,
        )
        rows = bodies(model["test_csv"], model["columns"], args.rows)
        project = root / "rollout"
        project.mkdir()
        config = write_config(project, steps, args.min_samples, args.max_latency_ratio, args.shadow)
        for kind, runs in (*((kind, args.bad_runs) for kind in BAD_KINDS), ("good", args.good_runs)):
            found, outcomes, stack_up_s[kind] = run_challenger(
                kind, runs, config=config, version=versions[kind], rows=rows, args=args,
                tracking_uri=tracking_uri, env=env,
            )  # fmt: skip
            results[kind] = found
            loads[kind] = dict(outcomes)
    except (BenchError, MlgateError) as error:
        print(f"bench_rollout: {error}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total_s = time.perf_counter() - total

    summary = {kind: summarise(kind, found, args.min_samples) for kind, found in results.items()}
    switches: Counter[str] = Counter()
    for outcomes in loads.values():
        switches.update(switch_failures(Counter(outcomes)))
    requests = sum(sum(outcomes.values()) for outcomes in loads.values())
    print()
    print(
        f"steps {'shadow, ' if args.shadow else ''}{steps}, profile test (1 s interval, 4 s bake, 30 s deadline), "
        f"min_samples {args.min_samples}, "
        f"max_latency_ratio {args.max_latency_ratio:g}; load {args.rate:g} req/s by {args.clients} clients, "
        f"one row a request; {os.cpu_count()} CPUs (shared: timings are indicative)"
    )
    print(table(summary, dict(switches), requests))
    for found in summary["good"]["false_rollback_reasons"]:
        print(f"false rollback: {found}")
    print(f"total {total_s:.0f} s")
    payload = {
        "benchmark": "rollout",
        **machine(),
        "settings": command_line(args),
        "plan": {
            "steps": steps,
            "shadow": args.shadow,
            "profile": "test",
            "min_samples": args.min_samples,
            "max_latency_ratio": args.max_latency_ratio,
        },
        "model": {
            "logged_uri": model["logged_uri"],
            "train_s": model["train_s"],
            "wrappers_s": model["wrappers_s"],
            "stable_version": STABLE_VERSION,
            "versions": versions,
        },
        "aims": {
            "rolled_back_at_step_index": AIM_STEP_INDEX,
            "sample_ratio": AIM_SAMPLE_RATIO,
            "false_rollbacks": AIM_FALSE_ROLLBACKS,
            "min_good_runs": AIM_MIN_GOOD_RUNS,
            "switch_failures": AIM_SWITCH_FAILURES,
        },
        "stack_up_s": stack_up_s,
        "summary": summary,
        "switch_failures": dict(switches),
        "load": loads,
        "rollouts": results,
        "total_s": total_s,
    }
    write_record(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
