"""The `prometheus` metric provider: PromQL over a Prometheus server's HTTP API (`/api/v1/query`).

For a Prometheus (or a compatible API: Thanos, Mimir, VictoriaMetrics) that scrapes the `mlgate serve`
servers. Each figure is one instant query over the window, e.g.
`sum(increase(mlgate_serve_requests_total{model="fraud",version="3"}[5m]))` and
`histogram_quantile(0.99, sum by (le) (rate(mlgate_serve_request_duration_seconds_bucket{...}[5m])))`,
summed over every replica and endpoint of that model version.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlgate.metrics import (
    ERRORS,
    LATENCY,
    QUANTILES,
    REQUESTS,
    SCORE,
    Bucket,
    MetricsError,
    Quantiles,
    Scores,
    ServerRef,
    WindowMetrics,
    error_rate,
    public_url,
)

DEFAULT_TIMEOUT_S = 10.0


def selector(server: ServerRef, **extra: str) -> str:
    """`{model="...",version="..."}`: label values quoted as PromQL string literals (JSON's escapes are Go's)."""
    labels = {"model": server.model, "version": server.version}
    matchers = [f"{name}={json.dumps(value)}" for name, value in labels.items()]
    matchers += [f"{name}=~{json.dumps(pattern)}" for name, pattern in extra.items()]
    return "{" + ",".join(matchers) + "}"


def duration(window_s: float) -> str:
    """A PromQL range in whole milliseconds (PromQL durations take no fractions)."""
    if not window_s > 0 or math.isinf(window_s):
        raise MetricsError(f"window of {window_s} s: a window must be a positive number of seconds")
    return f"{max(round(window_s * 1000), 1)}ms"


@dataclass(frozen=True)
class Queries:
    """The PromQL of every figure of one server over one window."""

    requests: str
    errors: str
    server_errors: str
    latency: tuple[str, ...]
    latency_buckets: str
    score_count: str
    score_sum: str
    score_buckets: str
    resets: str


def queries(server: ServerRef, window_s: float) -> Queries:
    labels, window = selector(server), f"[{duration(window_s)}]"
    server_errors = selector(server, status="5..")
    return Queries(
        requests=f"sum(increase({REQUESTS}{labels}{window}))",
        errors=f"sum(increase({ERRORS}{labels}{window}))",
        server_errors=f"sum(increase({ERRORS}{server_errors}{window}))",
        latency=tuple(
            f"histogram_quantile({q}, sum by (le) (rate({LATENCY}_bucket{labels}{window})))" for q in QUANTILES
        ),
        latency_buckets=f"sum by (le) (increase({LATENCY}_bucket{labels}{window}))",
        score_count=f"sum(increase({SCORE}_count{labels}{window}))",
        score_sum=f"sum(increase({SCORE}_sum{labels}{window}))",
        score_buckets=f"sum by (le) (increase({SCORE}_bucket{labels}{window}))",
        resets=f"sum(resets({REQUESTS}{labels}{window}))",
    )


class PrometheusProvider:
    """Asks the Prometheus at `url` (e.g. http://127.0.0.1:9090) for a server's figures over the last window."""

    name = "prometheus"

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not url.startswith(("http://", "https://")):
            raise MetricsError(
                f"the Prometheus URL {public_url(url)} is not an http:// or https:// URL",
                hint="give Prometheus' base URL, e.g. http://127.0.0.1:9090",
            )
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def start(self, server: ServerRef) -> None:
        """Nothing to do: Prometheus keeps the history; `read` asks for the window that ends at its call."""

    def read(
        self, server: ServerRef, window_s: float, at: float | None = None, *, advance: bool = True
    ) -> WindowMetrics:
        """The server's figures over the `window_s` seconds that end at `at` (a Unix time; default now).
        `advance` means nothing here: the window is always the last `window_s` seconds."""
        asked = queries(server, window_s)
        when = time.time() if at is None else at
        requests = self.scalar(asked.requests, when) or 0.0
        errors = self.scalar(asked.errors, when) or 0.0
        server_errors = self.scalar(asked.server_errors, when) or 0.0
        score_count = self.scalar(asked.score_count, when) or 0.0
        score_sum = self.scalar(asked.score_sum, when) or 0.0
        buckets = self.buckets(asked.score_buckets, when)
        p50, p95, p99 = (self.scalar(query, when) for query in asked.latency)
        return WindowMetrics(
            server=server,
            provider=self.name,
            window_s=window_s,
            requests=requests,
            errors=errors,
            server_errors=server_errors,
            error_rate=error_rate(server_errors, requests, max(errors - server_errors, 0.0)),
            latency=Quantiles(p50, p95, p99),
            scores=Scores(score_count, score_sum / score_count if score_count > 0 else None, buckets),
            restarted=(self.scalar(asked.resets, when) or 0.0) > 0,
            latency_buckets=self.buckets(asked.latency_buckets, when),
        )

    def buckets(self, query: str, at: float) -> tuple[Bucket, ...]:
        """A histogram's cumulative buckets, by bound, from a `sum by (le)` query."""
        found = (Bucket(float(labels["le"]), value) for labels, value in self.vector(query, at))
        return tuple(sorted(found, key=lambda bucket: bucket.le))

    def scalar(self, query: str, at: float) -> float | None:
        """The single value of an aggregated query; None when no series matched or the value is NaN."""
        found = self.vector(query, at)
        if len(found) > 1:
            raise MetricsError(f"PromQL {query} returned {len(found)} series where one was expected")
        if not found or math.isnan(found[0][1]):
            return None
        return found[0][1]

    def vector(self, query: str, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant vector: each series' labels and value."""
        data = self.query(query, at)
        if data.get("resultType") != "vector":
            raise MetricsError(f"PromQL {query} returned a {data.get('resultType')}, not an instant vector")
        found = []
        for item in data.get("result", []):
            labels: dict[str, str] = dict(item.get("metric", {}))
            found.append((labels, float(item["value"][1])))
        return found

    def query(self, query: str, at: float) -> Mapping[str, Any]:
        """`/api/v1/query`'s `data`, or a MetricsError with Prometheus' own message."""
        endpoint = f"{self.url}/api/v1/query"
        shown = public_url(endpoint)
        body = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"}).encode()
        request = urllib.request.Request(  # noqa: S310 (http(s) only: checked in __init__)
            endpoint, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310
                raw: bytes = answer.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            problem = _api_error(raw) or f"HTTP {exc.code} {exc.reason}"
            raise MetricsError(
                f"Prometheus at {shown} refused the query {query}: {problem}",
                hint="check the PromQL and that the URL is Prometheus' base URL (its /api/v1/query answers)",
            ) from None
        except TimeoutError:
            raise MetricsError(
                f"Prometheus at {shown} did not answer within {self.timeout_s:g} s",
                hint="check that Prometheus runs and is not overloaded, or give the provider a longer timeout",
            ) from None
        except OSError as exc:  # URLError (refused, no such host) and a connection reset
            raise MetricsError(
                f"Prometheus at {shown} cannot be reached: {getattr(exc, 'reason', exc)}",
                hint="check that Prometheus runs and listens on that address",
            ) from None
        try:
            document = json.loads(raw)
        except ValueError:
            raise MetricsError(
                f"{shown} did not answer with JSON: it is not Prometheus' HTTP API",
                hint="give Prometheus' base URL, e.g. http://127.0.0.1:9090",
            ) from None
        if not isinstance(document, dict) or document.get("status") != "success":
            problem = _api_error(raw) or "an answer without status success"
            raise MetricsError(f"Prometheus at {shown} could not run {query}: {problem}")
        data = document.get("data")
        if not isinstance(data, dict):
            raise MetricsError(f"Prometheus at {shown} answered {query} without data")
        return data


def _api_error(raw: bytes) -> str | None:
    """`errorType: error` from an API error body, or None when it is not one."""
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict) or "error" not in document:
        return None
    return f"{document.get('errorType', 'error')}: {document['error']}"


if TYPE_CHECKING:  # mypy checks the provider against the interface the canary analysis uses
    from mlgate.metrics import MetricsProvider

    _conforms: MetricsProvider = PrometheusProvider("http://127.0.0.1:9090")
