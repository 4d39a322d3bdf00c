"""What the canary analysis reads about one model server over a window, from either metric provider.

Two providers answer the same question (`MetricsProvider`): `scrape` (`mlgate.metrics.scrape`) reads a
server's own `/metrics` and takes differences between two of its scrapes; `prometheus`
(`mlgate.metrics.prometheus`) asks a Prometheus server that scrapes the servers, in PromQL. Both read the
series `mlgate serve` exports (`mlgate.serve.metrics`), selected by their `model` and `version` labels.

Counts are floats: Prometheus' `increase()` extrapolates to the window's edges, so it reports 9.6 where
a scrape counts 9; the ratios (error rate, mean score, quantiles) agree more closely than the counts.

The error rate is the model's own: its 5xx over the requests it was asked to answer. A 4xx is the request's
fault (a body too large or unreadable, a value the signature refuses), refused before the model runs, so it
counts neither as an error nor as a trial: clients sending bad rows to both models move neither rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from mlgate.errors import ToolError

# The series of `mlgate serve` (mlgate.serve.metrics; tests/unit/test_metrics_providers.py checks they agree).
REQUESTS = "mlgate_serve_requests_total"
ERRORS = "mlgate_serve_errors_total"
LATENCY = "mlgate_serve_request_duration_seconds"
SCORE = "mlgate_serve_score"
QUANTILES = (0.5, 0.95, 0.99)


class MetricsError(ToolError):
    """A metrics source could not be read: a server or Prometheus that does not answer, or answers an error."""


@dataclass(frozen=True)
class ServerRef:
    """One model server: the `model` and `version` labels of its series and, for `scrape`, its base URL."""

    model: str
    version: str
    url: str | None = None

    def describe(self) -> str:
        where = f" at {public_url(self.url)}" if self.url else ""
        return f"{self.model} version {self.version}{where}"


@dataclass(frozen=True)
class Quantiles:
    """Latency quantiles in seconds, interpolated within the histogram's buckets; None without requests."""

    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Bucket:
    """A cumulative histogram bucket: `count` observations at or below `le` (`le` is inf for the last)."""

    le: float
    count: float


@dataclass(frozen=True)
class Scores:
    """The scores the model returned in the window, one per row: how many, their mean, their distribution."""

    count: float
    mean: float | None
    buckets: tuple[Bucket, ...]

    def fractions(self) -> tuple[tuple[float, float], ...]:
        """(upper bound, share of the scores in that bucket alone): the distribution, for comparing two models."""
        if self.count <= 0:
            return ()
        shares: list[tuple[float, float]] = []
        below = 0.0
        for bucket in self.buckets:
            shares.append((bucket.le, max(bucket.count - below, 0.0) / self.count))
            below = bucket.count
        return tuple(shares)


@dataclass(frozen=True)
class WindowMetrics:
    """One server's requests, errors, latency and scores over a window, as one provider measured them.

    `window_s` is the span measured (None when the scrape provider had no earlier scrape: then the
    counts run from the server's start). `restarted` says the server restarted within the window (its
    counters went back to zero); the counts then start from the restart, as Prometheus' `increase` does.
    `server_errors` are the 5xx answers, `errors` every 4xx and 5xx, `requests` every answer; `error_rate` is
    the model's own, `server_errors` over `answered` (the requests less the client errors).
    """

    server: ServerRef
    provider: str
    window_s: float | None
    requests: float
    errors: float
    server_errors: float
    error_rate: float | None
    latency: Quantiles
    scores: Scores
    restarted: bool
    # The latency histogram behind `latency` (cumulative, seconds), for rank tests; empty when not read.
    latency_buckets: tuple[Bucket, ...] = ()

    @property
    def client_errors(self) -> float:
        """The 4xx answers: requests refused as the client's fault, before the model ran."""
        return max(self.errors - self.server_errors, 0.0)

    @property
    def answered(self) -> float:
        """The requests the model was asked to answer: every request but the client errors."""
        return max(self.requests - self.client_errors, 0.0)


def error_rate(server_errors: float, requests: float, client_errors: float = 0.0) -> float | None:
    """The model's own error rate: its 5xx over the requests less the 4xx (None when it answered none)."""
    answered = requests - client_errors
    return min(server_errors / answered, 1.0) if answered > 0 else None


class MetricsProvider(Protocol):
    """Where the canary analysis reads a server's metrics: `start` when a window opens, `read` when it closes.

    `scrape` measures between its own scrapes (start scrapes; read scrapes again), so `window_s` is what
    the caller expects and the result's `window_s` what was measured; `prometheus` needs no start and
    asks for the last `window_s` seconds.
    """

    name: str

    def start(self, server: ServerRef) -> None: ...

    def read(self, server: ServerRef, window_s: float, *, advance: bool = True) -> WindowMetrics:
        """The server's figures over the window; `advance=False` keeps the window's start where it was (scrape),
        so the next read measures from the same start: a window that grows."""
        ...


PROVIDERS = ("scrape", "prometheus")


def open_provider(kind: str, prometheus_url: str | None = None, timeout_s: float | None = None) -> MetricsProvider:
    """The provider named `kind` (`scrape` or `prometheus`, the latter at `prometheus_url`)."""
    if kind == "scrape":
        from mlgate.metrics.scrape import DEFAULT_TIMEOUT_S, ScrapeProvider

        return ScrapeProvider(timeout_s=timeout_s or DEFAULT_TIMEOUT_S)
    if kind == "prometheus":
        from mlgate.metrics.prometheus import DEFAULT_TIMEOUT_S as PROMETHEUS_TIMEOUT_S
        from mlgate.metrics.prometheus import PrometheusProvider

        if not prometheus_url:
            raise MetricsError(
                "the prometheus metrics provider needs Prometheus' URL",
                hint="give Prometheus' base URL, e.g. http://127.0.0.1:9090, or use the scrape provider",
            )
        return PrometheusProvider(prometheus_url, timeout_s=timeout_s or PROMETHEUS_TIMEOUT_S)
    raise MetricsError(f"unknown metrics provider {kind!r}", hint=f"use one of: {', '.join(PROVIDERS)}")


def bucket_quantile(q: float, buckets: list[Bucket] | tuple[Bucket, ...]) -> float | None:
    """The q-quantile of a cumulative histogram, as PromQL's histogram_quantile computes it; None when empty.

    Linear interpolation within the bucket that holds the rank; the first bucket starts at 0 (unless its
    bound is at or below 0); a rank in the +Inf bucket answers the highest finite bound.
    """
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda bucket: bucket.le)
    if not ordered or not math.isinf(ordered[-1].le):
        return None
    # Equal bounds (a histogram summed from series that disagree on formatting) count once.
    merged: list[Bucket] = []
    for bucket in ordered:
        if merged and merged[-1].le == bucket.le:
            merged[-1] = Bucket(bucket.le, merged[-1].count + bucket.count)
        else:
            merged.append(bucket)
    # Counts that fall from one bucket to the next (buckets scraped at slightly different moments) are lifted.
    monotonic: list[Bucket] = []
    highest = 0.0
    for bucket in merged:
        highest = max(highest, bucket.count)
        monotonic.append(Bucket(bucket.le, highest))
    if len(monotonic) < 2:
        return None
    observations = monotonic[-1].count
    if observations <= 0:
        return None
    rank = q * observations
    index = next(i for i, bucket in enumerate(monotonic) if bucket.count >= rank)
    if index == len(monotonic) - 1:
        return monotonic[-2].le
    if index == 0 and monotonic[0].le <= 0:
        return monotonic[0].le
    start, count = 0.0, monotonic[index].count
    if index > 0:
        start = monotonic[index - 1].le
        count -= monotonic[index - 1].count
        rank -= monotonic[index - 1].count
    end = monotonic[index].le
    if count <= 0:  # q = 0 over an empty first bucket: PromQL's 0/0, the bucket's start here
        return start
    return start + (end - start) * (rank / count)


def public_url(url: str) -> str:
    """`url` without user and password, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


__all__ = [
    "ERRORS",
    "LATENCY",
    "PROVIDERS",
    "QUANTILES",
    "REQUESTS",
    "SCORE",
    "Bucket",
    "MetricsError",
    "MetricsProvider",
    "Quantiles",
    "Scores",
    "ServerRef",
    "WindowMetrics",
    "bucket_quantile",
    "error_rate",
    "open_provider",
    "public_url",
]
