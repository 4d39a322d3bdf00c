"""`make demo`: the example project's workflows under act, on this checkout.

Two pull requests: one with good data, which passes (lint, data, training, model tests, compression),
and one whose training data drifted, which the data gate stops with the drifted features named. Then
the good one is merged and its push to main runs the release workflow: train, test, compress,
register, staging, and the production job, whose approval comes from a loopback stand-in of GitHub's
API (act does not pause for reviewers), promotes the release to @champion. Each run is what `mlgate ci`
does (the e2e harness calls the same `run_local_ci`), against one MLflow server for all, so the models
and the audit trail can be read back. Last, `mlgate traffic` serves @champion behind nginx with a canary
(another registered version, else the model the champion was compressed from) at 90/10: 400 requests,
then the split each side answered and both servers' requests, errors, p50/p99 latency and mean score
from their own /metrics; `mlgate traffic down` stops it all. Uses only loopback and temp folders.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlgate import gha
from mlgate.localci import MlflowServer
from mlgate.metrics import ServerRef, WindowMetrics
from mlgate.traffic.stack import readiness

from tests.e2e.github_api import GitHubApiStandin
from tests.e2e.harness import ActResult, Workbench

MODEL = "fraud-detection"  # the example project's registered model (model_tests.baseline.model)
KEEP = re.compile(r"(::error|::warning|FAILED|DRIFT|Job succeeded|Job failed|mlgate \S+ ready|✅ |❌ )")


def show(title: str, result: ActResult) -> None:
    print(f"\n=== {title}: act exit {result.returncode} in {result.seconds:.0f}s ===")
    for line in result.output.splitlines():
        if KEEP.search(line):
            print("  " + line.strip()[:220])


def drift(frame: pd.DataFrame) -> pd.DataFrame:
    frame["amount"] = frame["amount"] * 4.0
    return frame


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mlgate-demo-") as tmp:
        server = MlflowServer(Path(tmp) / "mlflow").start()
        print(f"MLflow tracking server on {server.uri} (sqlite, this demo only)")
        try:
            return run_demo(Path(tmp), server.uri)
        finally:
            server.stop()


def run_demo(tmp: Path, tracking_uri: str) -> int:
    bench = Workbench(tmp, tracking_uri=tracking_uri)
    good = bench.new_project("good-data")
    good_result = bench.act(good)
    show("PR with good data (expected: pass, and a trained model in MLflow)", good_result)
    show_training(tracking_uri)
    drifted = bench.new_project("drifted-data")
    drifted.change_data("train", drift, "data: amounts from the new card scheme")
    drifted_result = bench.act(drifted)
    show("PR with drifted training data (expected: fail on drift, no training)", drifted_result)
    good.git("checkout", "-q", "main")
    good.git("merge", "-q", "--no-ff", "pr/good-data", "-m", "Merge pull request #7: good data")
    with GitHubApiStandin() as github_api:
        github_api.approve("production", "release-manager", "metrics and model tests look good")
        release = bench.act(good, workflow="release.yml", event="push", github_api=github_api,
                            variables={"MLGATE_REQUIRE_GPU": "false"})  # fmt: skip
    show("Push to main: the release (expected: registered, approved, promoted to @champion)", release)
    show_registry(tracking_uri)
    print(f"\n=== mlgate traffic: @champion behind nginx, {100 - CANARY_PERCENT}/{CANARY_PERCENT} with a canary ===")
    served = show_traffic(tracking_uri, MODEL, tmp / "traffic")
    ok = good_result.returncode == 0 and drifted_result.returncode != 0 and release.returncode == 0 and served
    verdict = (
        "OK: the good PR passed, the drifted PR was stopped, the release went to @champion, "
        f"and it served {100 - CANARY_PERCENT}/{CANARY_PERCENT} beside a canary behind nginx"
    )
    print("\ndemo " + (verdict if ok else "FAILED"))
    return 0 if ok else 1


def show_registry(tracking_uri: str) -> None:
    from mlflow import MlflowClient
    from mlgate.registry import Registry, operations

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    registry = Registry(client, tracking_uri, MODEL, "mlgate-audit")
    if not registry.exists():
        print("  (no registered model: the release did not register)")
        return
    for alias, target in operations.status(registry).items():
        print(
            f"  @{alias}: version {target['version']} ({target['variant'] or 'not compressed'}) {target['model_uri']}"
        )
    for record in operations.history(registry):
        approvers = f", approved by {', '.join(record.who.approvers)}" if record.who.approvers else ""
        print(f"  audit: {record.operation} v{record.version} {record.decision} by {record.who.actor}{approvers}: "
              f"{record.reason}")  # fmt: skip


def show_training(tracking_uri: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(MODEL)
    if experiment is None:
        print("  (no MLflow experiment: the train job did not run)")
        return
    for run in client.search_runs([experiment.experiment_id], max_results=1):
        metrics = {k: round(v, 4) for k, v in run.data.metrics.items() if k.startswith("holdout_")}
        print(f"  MLflow run {run.info.run_id} ({run.info.status}) on {run.data.tags.get('mlgate.device')}: {metrics}")
        lineage = ("mlgate.git.commit", "mlgate.pr", "mlgate.dvc.data/train.csv", "mlgate.torch")
        print("  lineage: " + ", ".join(f"{k}={run.data.tags.get(k)}" for k in lineage))


# --- the champion served behind nginx, 90/10 --------------------------------------------------------------------

CANARY_PERCENT = 10
TRAFFIC_REQUESTS = 400
TRAFFIC_CLIENTS = 4  # each on one keep-alive connection
TRAFFIC_TIMEOUT_S = 180  # a bound for a stuck `up` (two model loads), not a timing


@dataclass(frozen=True)
class Answers:
    """What the demo's client got back: answers by upstream (nginx's X-Mlgate-Upstream header), and the failures."""

    by_upstream: Counter[str]
    failures: list[str]


def pick_canary(tracking_uri: str, model: str) -> tuple[str, str] | None:
    """(URI, what it is) of a model to serve beside @champion: another registered version when there is one
    (@challenger, @previous, else the newest), else the model the champion was compressed from; None when
    there is no champion."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        registered = client.get_registered_model(model)
    except MlflowException:  # the release did not register
        return None
    aliases = {str(alias): str(version) for alias, version in registered.aliases.items()}
    champion = aliases.get("champion")
    if champion is None:
        return None
    for alias in ("challenger", "previous"):
        if aliases.get(alias) not in (None, champion):
            return f"models:/{model}@{alias}", f"@{alias}, version {aliases[alias]}"
    others = sorted(
        (int(found.version) for found in client.search_model_versions(f"name='{model}'")),
        reverse=True,
    )
    for version in others:
        if str(version) != champion:
            return f"models:/{model}/{version}", f"version {version}"
    # One version, the release's: its compressed variant is the champion, and the model it was compressed from
    # is a logged model of its own. Serving both shows what compression changed in the scores and the latency.
    source = dict(client.get_model_version(model, champion).tags or {}).get("mlgate.compress.source", "")
    if source.startswith("models:/m-"):
        return source, f"the logged model version {champion} was compressed from"
    return f"models:/{model}/{champion}", f"version {champion} again (the registry holds no other)"


def prediction_bodies(tracking_uri: str, model: str, alias: str, folder: Path) -> list[bytes]:
    """One request body per row of the input example of `model@alias` (its own rows, so the scores vary)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import Model

    # Through the version's artifact location: a models:/ URI would resolve in the default registry, not this one.
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    location = client.get_model_version_download_uri(model, client.get_model_version_by_alias(model, alias).version)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a bar per download would bury the demo's lines
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(folder), tracking_uri=tracking_uri)
    example = Model.load(local).load_input_example(local)
    if not isinstance(example, pd.DataFrame) or example.empty:
        raise RuntimeError(f"models:/{model}@{alias} has no input example rows to send")
    return [
        b'{"dataframe_split": ' + example.iloc[[row]].to_json(orient="split", index=False).encode() + b"}"
        for row in range(len(example))
    ]


def send_load(port: int, bodies: list[bytes], requests: int, clients: int) -> Answers:
    """`requests` predictions from `clients` threads, each on its own keep-alive connection to nginx."""
    by_upstream: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client(share: int, offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for index in range(share):
                body = bodies[(offset + index) % len(bodies)]
                try:
                    connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                    answer = connection.getresponse()
                    content = answer.read()
                    upstream = answer.getheader("X-Mlgate-Upstream") or "(none)"
                    ok = answer.status == 200 and b'"predictions"' in content
                    problem = "" if ok else f"HTTP {answer.status} from {upstream}: {content[:200]!r}"
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()  # the next request opens a new one
                    upstream, problem = "(none)", f"{type(exc).__name__}: {exc}"
                with lock:
                    by_upstream[upstream] += 1
                    if problem:
                        failures.append(problem)
        finally:
            connection.close()

    shares = [requests // clients + (1 if index < requests % clients else 0) for index in range(clients)]
    threads = [threading.Thread(target=client, args=(share, index)) for index, share in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Answers(by_upstream, failures)


def mlgate(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "mlgate"), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip().splitlines())


def show_traffic(tracking_uri: str, model: str, workdir: Path) -> bool:
    """`mlgate traffic up` with @champion stable and another version canary, 90/10, a bounded load, then the
    split each side saw and both servers' own metrics; `mlgate traffic down` whatever happens. True when every
    request was answered, both servers counted what the client saw, the split is within a 4-sigma binomial
    bound of 90/10, and `down` stopped the stack."""
    from mlgate.statefile import free_port

    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "mlgate.yaml"
    port = free_port()
    config.write_text(f"version: 1\nproject: {model}\ntraffic:\n  nginx: {{listen_port: {port}}}\n", encoding="utf-8")
    served = stopped = False
    try:
        picked = pick_canary(tracking_uri, model)
        if picked is None:
            print(f"  traffic FAILED: {model} has no @champion to serve")
        else:
            served = serve_and_measure(tracking_uri, model, picked, config, port)
    except Exception as exc:  # the demo says what failed in one line, and still stops the stack
        print(f"  traffic FAILED: {type(exc).__name__}: {exc}")
    finally:
        try:
            down = mlgate("traffic", "down", "--config", str(config), timeout=120)
            print(indent(f"$ mlgate traffic down\n{down.stdout}{down.stderr}"))
            stopped = down.returncode == 0
        except subprocess.TimeoutExpired:
            pass
        if not stopped:
            print(f"  traffic FAILED: `mlgate traffic down` did not stop the stack (its state: {workdir / '.mlgate'})")
    print(f"  (this section took {time.monotonic() - started:.0f}s)")
    return served and stopped


def serve_and_measure(tracking_uri: str, model: str, canary: tuple[str, str], config: Path, port: int) -> bool:
    from mlgate.metrics.scrape import ScrapeProvider

    stable_uri, (canary_uri, canary_is) = f"models:/{model}@champion", canary
    print(f"  stable: {stable_uri}\n  canary: {canary_uri} ({canary_is})")
    bodies = prediction_bodies(tracking_uri, model, "champion", config.parent / "example")
    up = mlgate(
        "traffic", "up", "--config", str(config), "--stable", stable_uri, "--canary", canary_uri,
        "--tracking-uri", tracking_uri, timeout=TRAFFIC_TIMEOUT_S,
    )  # fmt: skip
    if up.returncode != 0:
        print(indent(up.stdout + up.stderr))
        raise RuntimeError(f"`mlgate traffic up` exited {up.returncode}")
    split = mlgate("traffic", "set", "--canary", str(CANARY_PERCENT), "--config", str(config))
    said = (split.stdout + split.stderr).strip().splitlines()[:1]  # its step outputs (weights, mirror) follow
    print(indent("\n".join([f"$ mlgate traffic set --canary {CANARY_PERCENT}", *said])))
    if split.returncode != 0:
        raise RuntimeError(f"`mlgate traffic set` exited {split.returncode}")
    status = mlgate("traffic", "status", "--config", str(config))
    print(indent(f"$ mlgate traffic status\n{status.stdout}{status.stderr}"))
    found = json.loads(mlgate("traffic", "status", "--json", "--config", str(config)).stdout)
    servers: dict[str, ServerRef] = {}
    for role, upstream in found["upstreams"].items():
        ready = readiness(int(upstream["port"]))[1]  # the labels of its metrics: the model and version it serves
        servers[role] = ServerRef(str(ready["model"]), str(ready["version"]), f"http://127.0.0.1:{upstream['port']}")
    provider = ScrapeProvider()  # mlgate's own provider: a scrape before the load and one after, differenced
    for server in servers.values():
        provider.start(server)
    sent = time.monotonic()
    answers = send_load(port, bodies, TRAFFIC_REQUESTS, TRAFFIC_CLIENTS)
    seconds = time.monotonic() - sent
    measured = {role: provider.read(server) for role, server in servers.items()}
    return report_traffic(answers, measured, seconds)


def report_traffic(answers: Answers, measured: dict[str, WindowMetrics], seconds: float) -> bool:
    total = sum(answers.by_upstream.values())
    canary = answers.by_upstream["canary"]
    observed = ", ".join(
        f"{role} {count} ({count / total:.1%})" for role, count in sorted(answers.by_upstream.items(), reverse=True)
    )
    print(f"\n  {total} requests in {seconds:.1f}s on {TRAFFIC_CLIENTS} keep-alive connections to nginx; answered by")
    print(f"  (X-Mlgate-Upstream): {observed}; each server's own /metrics (mlgate.metrics.scrape):")
    rows = []
    for role, window in measured.items():
        latency, mean = window.latency, window.scores.mean
        rows.append([
            role, described(window.server), f"{window.requests:.0f}",
            f"{window.errors:.0f}", ms(latency.p50), ms(latency.p99), "-" if mean is None else f"{mean:.4f}",
        ])  # fmt: skip
    header = ["server", "model", "requests", "errors", "p50 ms", "p99 ms", "mean score"]
    print(indent(gha.plain_text(gha.md_table(header, rows))))
    counted = {role: int(window.requests) for role, window in measured.items()}
    problems = [f"{len(answers.failures)} requests failed: {answers.failures[:3]}"] if answers.failures else []
    if counted != {role: answers.by_upstream[role] for role in counted}:
        problems.append(f"the servers counted {counted}, the client saw {dict(answers.by_upstream)}")
    sigma = math.sqrt(total * CANARY_PERCENT / 100 * (1 - CANARY_PERCENT / 100))
    if abs(canary - total * CANARY_PERCENT / 100) > 4 * sigma + 1:
        problems.append(f"the canary got {canary} of {total}, outside 4 sigma of {CANARY_PERCENT}%")
    for problem in problems:
        print(f"  traffic FAILED: {problem}")
    return not problems


def described(server: ServerRef) -> str:
    version = server.version
    return f"{server.model} {'v' + version if version.isdigit() else version}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
