"""Both metric providers against real servers on loopback: two `mlgate serve` processes (one model that raises for
large batches), a real Prometheus (Debian's package) scraping them every second, and the canary analysis' figures
read both ways: they agree, they tell the servers apart, and a server that stops is a clear error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import modeltest_models
import pandas as pd
import pytest
from mlgate.metrics import MetricsError, ServerRef, WindowMetrics
from mlgate.metrics.prometheus import PrometheusProvider
from mlgate.metrics.scrape import ScrapeProvider
from mlgate.statefile import free_port
from modeltest_models import Logistic

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus server is not installed (`make venv` installs Debian's package: apt-get install prometheus)",
)

ROWS = pd.DataFrame({"amount": [12.5, 480.0, 3000.0], "velocity": [1.0, 4.0, 20.0]})
BIG_BATCH = pd.concat([ROWS] * 40)  # 120 rows: `fragile` raises above 100
READY_WITHIN_S = 120  # bounds for a stuck start or scrape, not timing assertions
SCRAPED_WITHIN_S = 30
GOOD_REQUESTS = {"fraud": 12, "fragile": 6}
FAILING_REQUESTS = {"fraud": 0, "fragile": 3}


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the process group the test started (uvicorn and prometheus finish gracefully on SIGTERM)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def post(url: str, frame: pd.DataFrame) -> int:
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


@dataclass
class Stack:
    servers: dict[str, ServerRef]
    processes: dict[str, subprocess.Popen[bytes]]
    prometheus_url: str
    logs: Path

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]


def store(root: Path) -> str:
    """A sqlite MLflow store with `fraud` v1 and `fragile` v1 (the same scores, but it raises above 100 rows)."""
    import mlflow
    from mlflow.models import infer_signature

    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        signature = infer_signature(ROWS, Logistic().predict(None, ROWS))
        for name, model in (("fraud", Logistic()), ("fragile", Logistic(output="small-batches"))):
            with mlflow.start_run():
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=model,
                    code_paths=[modeltest_models.__file__],
                    signature=signature,
                    input_example=ROWS.head(2),
                    pip_requirements=["mlflow"],
                )
            mlflow.register_model(info.model_uri, name)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return uri


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("metrics-live")
    uri = store(root)
    mlgate = Path(sys.executable).parent / "mlgate"
    ports = {"fraud": free_port(), "fragile": free_port()}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, port in ports.items():
            with (root / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    [str(mlgate), "serve", "--model", f"models:/{name}/1", "--tracking-uri", uri, "--port", str(port)],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
                )  # fmt: skip
        prometheus_port = free_port()
        targets = ", ".join(f'"127.0.0.1:{port}"' for port in ports.values())
        config = root / "prometheus.yml"
        config.write_text(
            "global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }\n"
            f"scrape_configs:\n  - job_name: mlgate-serve\n    static_configs:\n      - targets: [{targets}]\n"
        )
        assert PROMETHEUS is not None
        with (root / "prometheus.log").open("wb") as log:
            processes["prometheus"] = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
            )  # fmt: skip
        built = Stack(
            servers={name: ServerRef(name, "1", f"http://127.0.0.1:{port}") for name, port in ports.items()},
            processes=processes,
            prometheus_url=f"http://127.0.0.1:{prometheus_port}",
            logs=root,
        )
        ready = {**{name: f"{server.url}/ready" for name, server in built.servers.items()},
                 "prometheus": f"{built.prometheus_url}/-/ready"}  # fmt: skip
        deadline = time.monotonic() + READY_WITHIN_S
        while ready:
            for name, url in list(ready.items()):
                assert processes[name].poll() is None, built.log(name)
                if get(url)[0] == 200:
                    del ready[name]
            assert time.monotonic() < deadline, {name: built.log(name) for name in ready}
            time.sleep(0.2)
        yield built
    finally:
        for process in processes.values():
            stop(process)


def request_samples(stack: Stack, model: str) -> list[tuple[float, float]]:
    """Prometheus' stored samples of the model's requests counter, summed over its series: (time, total)."""
    query = f'mlgate_serve_requests_total{{model="{model}"}}[2m]'
    url = f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = get(url)
    assert status == 200, body
    totals: dict[float, float] = {}
    for series in json.loads(body)["data"]["result"]:
        for at, value in series["values"]:
            totals[float(at)] = totals.get(float(at), 0.0) + float(value)
    return sorted(totals.items())


def wait_scraped(stack: Stack, model: str, total: float) -> list[tuple[float, float]]:
    """Prometheus' samples once its latest sample of the model shows `total` requests."""
    deadline = time.monotonic() + SCRAPED_WITHIN_S
    while True:
        samples = request_samples(stack, model)
        if samples and samples[-1][1] == total:
            return samples
        assert time.monotonic() < deadline, (samples[-5:], stack.log("prometheus"))
        time.sleep(0.25)


def send(server: ServerRef, good: int, failing: int) -> None:
    # Interleaved, so the failures fall among the successes as a canary's would.
    for index in range(good + failing):
        fails = index % 3 == 2 and failing > 0
        status = post(f"{server.url}/invocations", BIG_BATCH if fails else ROWS)
        assert status == (500 if fails else 200)
        failing -= fails


def agree(scraped: WindowMetrics, queried: WindowMetrics) -> None:
    # The Prometheus window runs from 1 ms before its first sample to its last, so increase() extrapolates each
    # series by 1 ms over a span of a second or more (and a series that started at zero not at all): ~1e-3 apart.
    close = {"rel": 1e-2, "abs": 1e-6}
    assert queried.requests == pytest.approx(scraped.requests, **close)
    assert queried.errors == pytest.approx(scraped.errors, **close)
    assert queried.server_errors == pytest.approx(scraped.server_errors, **close)
    assert queried.error_rate == pytest.approx(scraped.error_rate, **close)
    for field in ("p50", "p95", "p99"):
        assert getattr(queried.latency, field) == pytest.approx(getattr(scraped.latency, field), **close), field
    assert queried.scores.count == pytest.approx(scraped.scores.count, **close)
    assert queried.scores.mean == pytest.approx(scraped.scores.mean, **close)
    assert [bucket.le for bucket in queried.scores.buckets] == [bucket.le for bucket in scraped.scores.buckets]
    assert [b.count for b in queried.scores.buckets] == pytest.approx(
        [b.count for b in scraped.scores.buckets], **close
    )
    assert [bucket.le for bucket in queried.latency_buckets] == [bucket.le for bucket in scraped.latency_buckets]
    assert [b.count for b in queried.latency_buckets] == pytest.approx(
        [b.count for b in scraped.latency_buckets], **close
    )
    assert (queried.restarted, scraped.restarted) == (False, False)


def test_both_providers_agree_and_tell_the_two_servers_apart(stack: Stack) -> None:
    fraud, fragile = stack.servers["fraud"], stack.servers["fragile"]
    # Every series the window will read exists before it opens (increase() counts nothing for a new series'
    # first sample), and Prometheus holds a sample of these totals.
    assert post(f"{fraud.url}/invocations", ROWS) == 200
    assert post(f"{fragile.url}/invocations", ROWS) == 200
    assert post(f"{fragile.url}/invocations", BIG_BATCH) == 500
    before = {"fraud": 1.0, "fragile": 2.0}
    for name, total in before.items():
        wait_scraped(stack, name, total)
    scrape = ScrapeProvider(timeout_s=5)
    prometheus = PrometheusProvider(stack.prometheus_url, timeout_s=10)
    for server in (fraud, fragile):
        scrape.start(server)
        prometheus.start(server)
    for name, server in stack.servers.items():
        send(server, GOOD_REQUESTS[name], FAILING_REQUESTS[name])

    for name, server in stack.servers.items():
        sent = GOOD_REQUESTS[name] + FAILING_REQUESTS[name]
        samples = wait_scraped(stack, name, before[name] + sent)
        scraped = scrape.read(server, 60)
        opened = max(at for at, total in samples if total == before[name])
        closed = samples[-1][0]
        queried = prometheus.read(server, closed - opened + 0.001, at=closed)

        failed = FAILING_REQUESTS[name]
        assert (scraped.requests, scraped.errors, scraped.server_errors) == (sent, failed, failed)
        assert scraped.scores.count == GOOD_REQUESTS[name] * len(ROWS)
        assert scraped.latency.p99 is not None and scraped.latency.p50 is not None
        assert 0 < scraped.latency.p50 <= scraped.latency.p99
        assert scraped.window_s is not None and scraped.window_s > 0
        agree(scraped, queried)
        assert queried.provider == "prometheus" and scraped.provider == "scrape"

    fraud_now = prometheus.read(fraud, 120)
    fragile_now = prometheus.read(fragile, 120)
    assert fraud_now.error_rate == 0.0
    # fragile: 3 failures in the 9 requests after its first scrape (increase() does not count a series' first value).
    assert fragile_now.error_rate is not None and fragile_now.error_rate > 0.25
    assert fragile_now.requests < fraud_now.requests * 1.5  # each model's own series, not the sum of both


def test_prometheus_refuses_a_bad_query_with_its_own_message(stack: Stack) -> None:
    provider = PrometheusProvider(stack.prometheus_url)
    with pytest.raises(MetricsError, match=r"refused the query sum\(: bad_data: .*parse error") as caught:
        provider.query("sum(", time.time())
    assert stack.prometheus_url in str(caught.value)


def test_a_server_that_stops_is_an_error_naming_its_metrics_url(stack: Stack) -> None:
    fragile = stack.servers["fragile"]
    scrape = ScrapeProvider(timeout_s=3)
    scrape.start(fragile)
    stop(stack.processes["fragile"])
    with pytest.raises(MetricsError, match=rf"metrics endpoint {fragile.url}/metrics cannot be reached") as caught:
        scrape.read(fragile, 60)
    assert caught.value.hint is not None and "stopped" in caught.value.hint
    # The other server still answers, and Prometheus keeps what it scraped before the stop.
    assert scrape.read(stack.servers["fraud"], 60).requests >= 13
    assert PrometheusProvider(stack.prometheus_url).read(fragile, 120).requests > 0
