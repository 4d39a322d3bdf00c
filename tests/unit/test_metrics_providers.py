"""The metric providers of the canary analysis, offline: exposition parsing, differences between scrapes, counter
resets, quantiles interpolated within buckets as PromQL's histogram_quantile does, and the errors a user reads
when a metrics endpoint or Prometheus cannot be read."""

from __future__ import annotations

import http.server
import math
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from mlgate.metrics import Bucket, MetricsError, ServerRef, bucket_quantile, open_provider
from mlgate.metrics.prometheus import PrometheusProvider, queries, selector
from mlgate.metrics.scrape import ScrapeProvider, measure, parse
from prometheus_client import CollectorRegistry, generate_latest

FRAUD = ServerRef("fraud", "3", "http://127.0.0.1:1")
OTHER = ServerRef("fraud", "4", "http://127.0.0.1:1")


def exposition(
    ok: int,
    server_errors: int,
    client_errors: int,
    latency: tuple[int, int, int],
    scores: tuple[int, int, int],
    score_sum: float,
    created: float = 1767261600.0,
    version: str = "3",
) -> str:
    """A scrape of one `mlgate serve` as prometheus-client writes it; latency counts are per bucket (<=0.01, <=0.1,
    above), score counts too (<=0.5, <=1, above)."""
    labels = f'model="fraud",version="{version}"'
    total = ok + server_errors + client_errors
    lat_a, lat_b, lat_c = latency
    sc_a, sc_b, sc_c = scores
    lines = [
        "# HELP mlgate_serve_requests_total Prediction requests answered, by endpoint and HTTP status.",
        "# TYPE mlgate_serve_requests_total counter",
        f'mlgate_serve_requests_total{{{labels},endpoint="/invocations",status="200"}} {ok}.0',
        f'mlgate_serve_requests_total{{{labels},endpoint="/invocations",status="500"}} {server_errors}.0',
        f'mlgate_serve_requests_total{{{labels},endpoint="/predict",status="400"}} {client_errors}.0',
        f'mlgate_serve_requests_created{{{labels},endpoint="/invocations",status="200"}} {created}',
        "# HELP mlgate_serve_errors_total Prediction requests answered with an error.",
        "# TYPE mlgate_serve_errors_total counter",
        f'mlgate_serve_errors_total{{{labels},endpoint="/invocations",status="500"}} {server_errors}.0',
        f'mlgate_serve_errors_total{{{labels},endpoint="/predict",status="400"}} {client_errors}.0',
        "# HELP mlgate_serve_request_duration_seconds Time from a request's arrival to its answer.",
        "# TYPE mlgate_serve_request_duration_seconds histogram",
        f'mlgate_serve_request_duration_seconds_bucket{{{labels},endpoint="/invocations",le="0.01"}} {lat_a}.0',
        f'mlgate_serve_request_duration_seconds_bucket{{{labels},endpoint="/invocations",le="0.1"}} {lat_a + lat_b}.0',
        f'mlgate_serve_request_duration_seconds_bucket{{{labels},endpoint="/invocations",le="+Inf"}} {total}.0',
        f'mlgate_serve_request_duration_seconds_count{{{labels},endpoint="/invocations"}} {total}.0',
        f'mlgate_serve_request_duration_seconds_sum{{{labels},endpoint="/invocations"}} 1.0',
        "# HELP mlgate_serve_score The scores the model returned, one observation per row.",
        "# TYPE mlgate_serve_score histogram",
        f'mlgate_serve_score_bucket{{{labels},le="0.5"}} {sc_a}.0',
        f'mlgate_serve_score_bucket{{{labels},le="1.0"}} {sc_a + sc_b}.0',
        f'mlgate_serve_score_bucket{{{labels},le="+Inf"}} {sc_a + sc_b + sc_c}.0',
        f"mlgate_serve_score_count{{{labels}}} {sc_a + sc_b + sc_c}.0",
        f"mlgate_serve_score_sum{{{labels}}} {score_sum}",
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        "process_cpu_seconds_total 3.2",
    ]
    assert lat_a + lat_b + lat_c == total
    return "\n".join(lines) + "\n"


# --- PromQL's histogram_quantile, bucket by bucket ------------------------------------------------------------


def test_quantiles_interpolate_linearly_within_the_bucket_that_holds_the_rank() -> None:
    buckets = [Bucket(0.1, 10), Bucket(0.2, 20), Bucket(math.inf, 20)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1)  # rank 10: the top of the first bucket
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.05)  # the first bucket starts at 0
    assert bucket_quantile(0.95, buckets) == pytest.approx(0.19)  # 9 of the second bucket's 10: 0.1 + 0.9 * 0.1
    assert bucket_quantile(0.95, list(reversed(buckets))) == pytest.approx(0.19)  # order does not matter


def test_a_rank_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    buckets = [Bucket(0.1, 1), Bucket(0.5, 2), Bucket(math.inf, 10)]
    assert bucket_quantile(0.99, buckets) == 0.5
    assert bucket_quantile(0.1, buckets) == pytest.approx(0.1)


def test_quantiles_of_nothing_are_none_and_out_of_range_q_is_infinite() -> None:
    assert bucket_quantile(0.5, []) is None
    assert bucket_quantile(0.5, [Bucket(0.1, 0), Bucket(math.inf, 0)]) is None  # no observations
    assert bucket_quantile(0.5, [Bucket(math.inf, 5)]) is None  # one bucket: nothing to interpolate in
    assert bucket_quantile(0.5, [Bucket(0.1, 3), Bucket(0.2, 5)]) is None  # no +Inf bucket
    assert bucket_quantile(1.5, [Bucket(0.1, 3), Bucket(math.inf, 5)]) == math.inf
    assert bucket_quantile(-0.5, [Bucket(0.1, 3), Bucket(math.inf, 5)]) == -math.inf


def test_buckets_that_fall_are_lifted_as_prometheus_does() -> None:
    # 0.2 reads fewer than 0.1 (scraped a moment apart): it counts as 10, so 0.3's bucket holds 6, not 8.
    buckets = [Bucket(0.1, 10), Bucket(0.2, 8), Bucket(0.3, 16), Bucket(math.inf, 20)]
    assert bucket_quantile(0.6, buckets) == pytest.approx(0.2 + 0.1 * 2 / 6)
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1)


# --- differences between two scrapes ----------------------------------------------------------------------------


def test_two_scrapes_give_the_window_s_requests_errors_latency_and_scores() -> None:
    before = parse(exposition(10, 1, 1, (12, 0, 0), (8, 2, 0), 4.0), taken_at=100.0)
    after = parse(exposition(28, 3, 1, (22, 10, 0), (14, 20, 0), 16.0), taken_at=115.0)
    window = measure(before, after, FRAUD)
    assert window.window_s == 15.0
    assert (window.requests, window.errors, window.server_errors) == (20, 2, 2)  # 18 ok + 2 failed, no new 400
    assert window.error_rate == pytest.approx(0.1)
    assert window.restarted is False
    # Latency in the window: 10 requests at or below 10 ms, 10 between 10 and 100 ms.
    assert window.latency.p50 == pytest.approx(0.01)
    assert window.latency.p95 == pytest.approx(0.01 + 0.09 * 0.9)
    assert window.latency.p99 == pytest.approx(0.01 + 0.09 * 0.98)
    assert window.latency_buckets == (Bucket(0.01, 10), Bucket(0.1, 20), Bucket(math.inf, 20))
    # Scores: 6 at or below 0.5 and 18 between 0.5 and 1, summing to 12.
    assert window.scores.count == 24
    assert window.scores.mean == pytest.approx(0.5)
    assert window.scores.buckets == (Bucket(0.5, 6), Bucket(1.0, 24), Bucket(math.inf, 24))
    assert window.scores.fractions() == ((0.5, 0.25), (1.0, 0.75), (math.inf, 0.0))


def test_without_a_previous_scrape_the_counts_run_from_the_server_s_start() -> None:
    window = measure(None, parse(exposition(8, 1, 1, (10, 0, 0), (4, 0, 0), 1.0), taken_at=5.0), FRAUD)
    assert window.window_s is None
    assert (window.requests, window.errors, window.server_errors) == (10, 2, 1)
    assert window.error_rate == pytest.approx(1 / 9)  # the model's own: its one 5xx of the 9 it answered (not the 400)
    assert window.scores.mean == pytest.approx(0.25)


def test_a_window_without_requests_has_no_rate_and_no_quantiles() -> None:
    same = exposition(10, 1, 1, (12, 0, 0), (8, 2, 0), 4.0)
    window = measure(parse(same, 1.0), parse(same, 2.0), FRAUD)
    assert (window.requests, window.errors, window.error_rate) == (0, 0, None)
    assert (window.latency.p50, window.latency.p99, window.scores.mean) == (None, None, None)
    assert window.scores.fractions() == ()


def test_a_counter_that_falls_is_a_restart_measured_from_zero() -> None:
    before = parse(exposition(500, 5, 0, (505, 0, 0), (500, 0, 0), 100.0), taken_at=0.0)
    after = parse(exposition(7, 1, 0, (8, 0, 0), (7, 0, 0), 1.4), taken_at=10.0)
    window = measure(before, after, FRAUD)
    assert window.restarted is True
    # Not -498: what the restarted process counted, as Prometheus' increase() does.
    assert (window.requests, window.errors) == (8, 1)
    assert window.error_rate == pytest.approx(1 / 8)
    assert window.scores.mean == pytest.approx(0.2)


def test_a_restart_is_seen_by_its_created_time_even_when_the_counters_grew_past_the_old_values() -> None:
    before = parse(exposition(5, 0, 0, (5, 0, 0), (5, 0, 0), 1.0, created=1000.0), taken_at=0.0)
    after = parse(exposition(9, 0, 0, (9, 0, 0), (9, 0, 0), 1.8, created=1010.0), taken_at=30.0)
    window = measure(before, after, FRAUD)
    assert window.restarted is True
    assert window.requests == 9
    later = exposition(9, 0, 0, (9, 0, 0), (9, 0, 0), 1.8, created=1000.0)
    same_process = measure(before, parse(later, taken_at=30.0), FRAUD)
    assert (same_process.restarted, same_process.requests) == (False, 4)


def test_a_series_that_vanished_is_a_restart() -> None:
    # After a restart the 400 series is not there until the first 400: the process is new.
    before = parse(exposition(5, 0, 2, (7, 0, 0), (5, 0, 0), 1.0), taken_at=0.0)
    text = exposition(9, 0, 0, (9, 0, 0), (9, 0, 0), 1.8)
    after = parse("\n".join(line for line in text.splitlines() if 'status="400"' not in line) + "\n", taken_at=5.0)
    window = measure(before, after, FRAUD)
    assert (window.restarted, window.requests) == (True, 9)


def test_a_new_series_counts_from_zero_without_a_restart() -> None:
    text = exposition(5, 0, 0, (5, 0, 0), (5, 0, 0), 1.0)
    before = parse("\n".join(line for line in text.splitlines() if 'status="500"' not in line) + "\n", 0.0)
    after = parse(exposition(5, 2, 0, (7, 0, 0), (5, 0, 0), 1.0), 1.0)
    window = measure(before, after, FRAUD)
    assert (window.restarted, window.requests, window.server_errors) == (False, 2, 2)
    assert window.error_rate == 1.0


def test_only_the_named_model_version_is_measured() -> None:
    text = exposition(10, 0, 0, (10, 0, 0), (10, 0, 0), 2.0) + exposition(
        3, 3, 0, (6, 0, 0), (3, 0, 0), 2.7, version="4"
    ).replace("# HELP", "# IGNORED").replace("# TYPE", "# IGNORED")
    snapshot = parse(text, 0.0)
    assert measure(None, snapshot, FRAUD).error_rate == 0.0
    other = measure(None, snapshot, OTHER)
    assert (other.requests, other.error_rate, other.scores.mean) == (6, 0.5, pytest.approx(0.9))


def test_the_series_names_are_those_mlgate_serve_exports() -> None:
    # The real exposition of `mlgate serve`'s metrics, parsed and measured: the names and labels agree.
    from mlgate.serve.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    before = parse(generate_latest(metrics.registry).decode(), 0.0)
    for status, scores in ((200, [0.1, 0.3]), (200, [0.9]), (503, None), (422, None)):
        metrics.observe("fraud", "3", "/invocations", status, 0.004, scores)
    after = parse(generate_latest(metrics.registry).decode(), 1.0)
    window = measure(before, after, FRAUD)
    assert (window.requests, window.errors, window.server_errors, window.restarted) == (4, 2, 1, False)
    assert window.scores.count == 3 and window.scores.mean == pytest.approx(1.3 / 3)
    assert window.latency.p50 is not None and 0.0025 < window.latency.p50 <= 0.005


def test_the_error_rate_is_the_model_s_own_client_errors_left_out() -> None:
    # 100 requests: 36 answered, 4 the model failed (5xx), 60 refused as the client's fault (4xx) before it ran.
    before = parse(exposition(0, 0, 0, (0, 0, 0), (0, 0, 0), 0.0), taken_at=0.0)
    after = parse(exposition(36, 4, 60, (100, 0, 0), (36, 0, 0), 9.0), taken_at=60.0)
    window = measure(before, after, FRAUD)
    assert (window.requests, window.errors, window.server_errors, window.client_errors) == (100, 64, 4, 60)
    assert window.answered == 40
    assert window.error_rate == pytest.approx(4 / 40)  # not 64 / 100, nor 4 / 100
    every_one_refused = measure(before, parse(exposition(0, 0, 5, (5, 0, 0), (0, 0, 0), 0.0), 60.0), FRAUD)
    assert (every_one_refused.requests, every_one_refused.error_rate) == (5, None)

    class Canned(PrometheusProvider):
        """Answers each query of the window with the figures above, as Prometheus would."""

        def query(self, query: str, at: float) -> dict[str, Any]:
            asked = queries(FRAUD, 60)
            value = {asked.requests: 100.0, asked.errors: 64.0, asked.server_errors: 4.0}.get(query)
            found = [] if value is None else [{"metric": {}, "value": [at, str(value)]}]
            return {"resultType": "vector", "result": found}

    queried = Canned("http://127.0.0.1:9090").read(FRAUD, 60, at=1000.0)
    assert (queried.requests, queried.client_errors, queried.error_rate) == (100, 60, pytest.approx(0.1))


# --- the scrape provider over HTTP ------------------------------------------------------------------------------


class Exposition(http.server.BaseHTTPRequestHandler):
    texts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = self.texts.pop(0).encode() if len(self.texts) > 1 else self.texts[0].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, type[Exposition]]]:
    handler = type("Handler", (Exposition,), {"texts": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_scrape_provider_measures_between_its_own_scrapes(metrics_server: tuple[str, type[Exposition]]) -> None:
    url, handler = metrics_server
    handler.texts += [
        exposition(10, 0, 0, (10, 0, 0), (10, 0, 0), 2.0),
        exposition(20, 5, 0, (25, 0, 0), (20, 0, 0), 4.0),
        exposition(21, 5, 0, (26, 0, 0), (21, 0, 0), 4.5),
    ]
    server = ServerRef("fraud", "3", url + "/")
    ticks = iter([100.0, 160.0, 170.0])
    provider = ScrapeProvider(clock=lambda: next(ticks))
    provider.start(server)
    first = provider.read(server, 60)
    assert (first.window_s, first.requests, first.error_rate, first.provider) == (
        60.0,
        15,
        pytest.approx(1 / 3),
        "scrape",
    )
    second = provider.read(server, 10)  # the previous read opened this window
    assert (second.window_s, second.requests, second.errors) == (10.0, 1, 0)


def test_a_read_that_does_not_advance_leaves_the_window_growing(metrics_server: tuple[str, type[Exposition]]) -> None:
    url, handler = metrics_server
    handler.texts += [
        exposition(10, 0, 0, (10, 0, 0), (10, 0, 0), 2.0),
        exposition(20, 5, 0, (25, 0, 0), (20, 0, 0), 4.0),
        exposition(21, 5, 0, (26, 0, 0), (21, 0, 0), 4.5),
    ]
    server = ServerRef("fraud", "3", url)
    ticks = iter([100.0, 160.0, 170.0])
    provider = ScrapeProvider(clock=lambda: next(ticks))
    provider.start(server)
    assert provider.read(server, 60, advance=False).requests == 15
    grown = provider.read(server, 70, advance=False)  # still from the start's scrape
    assert (grown.window_s, grown.requests, grown.errors) == (70.0, 16, 5)


def test_an_endpoint_that_disappears_is_an_error_naming_its_url(metrics_server: tuple[str, type[Exposition]]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = ScrapeProvider(timeout_s=2)
    with pytest.raises(MetricsError, match=rf"metrics endpoint http://127.0.0.1:{port}/metrics cannot be reached"):
        provider.read(ServerRef("fraud", "3", f"http://127.0.0.1:{port}"))


def test_an_endpoint_that_hangs_is_an_error_within_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(MetricsError, match=rf"{url}/metrics did not answer within 0.5 s") as caught:
            ScrapeProvider(timeout_s=0.5).read(ServerRef("fraud", "3", url))
        assert time.monotonic() - started < 10  # bounded, not a timing assertion
    assert caught.value.exit_code == 4


def test_an_endpoint_that_is_not_mlgate_serve_is_refused(metrics_server: tuple[str, type[Exposition]]) -> None:
    url, handler = metrics_server
    handler.texts.append("# TYPE up gauge\nup 1\n")
    with pytest.raises(MetricsError, match="does not export mlgate_serve_requests_total"):
        ScrapeProvider().read(ServerRef("fraud", "3", url))
    with pytest.raises(MetricsError, match=r"answered HTTP 404"):
        ScrapeProvider().read(ServerRef("fraud", "3", url + "/nested"))
    with pytest.raises(MetricsError, match="needs the base URL of fraud version 3"):
        ScrapeProvider().read(ServerRef("fraud", "3"))


# --- the prometheus provider's queries and errors ---------------------------------------------------------------


def test_promql_selects_the_model_version_with_quoted_labels() -> None:
    asked = queries(ServerRef('fr"aud', "3"), 90)
    assert asked.requests == 'sum(increase(mlgate_serve_requests_total{model="fr\\"aud",version="3"}[90000ms]))'
    assert asked.server_errors == (
        'sum(increase(mlgate_serve_errors_total{model="fr\\"aud",version="3",status=~"5.."}[90000ms]))'
    )
    assert asked.latency[2] == (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(mlgate_serve_request_duration_seconds_bucket{model="fr\\"aud",version="3"}[90000ms])))'
    )
    assert selector(ServerRef("a", "b")) == '{model="a",version="b"}'
    with pytest.raises(MetricsError, match="a window must be a positive number of seconds"):
        queries(ServerRef("a", "b"), 0)


def test_prometheus_down_is_an_error_naming_its_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = PrometheusProvider(f"http://user:secret@127.0.0.1:{port}/", timeout_s=2)
    with pytest.raises(
        MetricsError, match=rf"Prometheus at http://127.0.0.1:{port}/api/v1/query cannot be reached"
    ) as caught:
        provider.read(FRAUD, 60)
    assert "secret" not in str(caught.value)
    with pytest.raises(MetricsError, match="not an http:// or https:// URL"):
        PrometheusProvider("127.0.0.1:9090")


def test_a_provider_is_opened_by_name() -> None:
    assert isinstance(open_provider("scrape", timeout_s=2), ScrapeProvider)
    opened = open_provider("prometheus", prometheus_url="http://127.0.0.1:9090")
    assert isinstance(opened, PrometheusProvider) and opened.url == "http://127.0.0.1:9090"
    with pytest.raises(MetricsError, match="needs Prometheus' URL"):
        open_provider("prometheus")
    with pytest.raises(MetricsError, match="unknown metrics provider 'datadog'") as caught:
        open_provider("datadog")
    assert caught.value.hint == "use one of: scrape, prometheus"


def test_an_endpoint_serving_another_version_is_refused(metrics_server: tuple[str, type[Exposition]]) -> None:
    url, handler = metrics_server
    handler.texts.append(exposition(5, 0, 0, (5, 0, 0), (5, 0, 0), 1.0, version="4"))
    with pytest.raises(MetricsError, match=rf"{url}/metrics reports fraud version 4, not fraud version 3"):
        ScrapeProvider().read(ServerRef("fraud", "3", url))
    assert ScrapeProvider().read(ServerRef("fraud", "4", url)).requests == 5
