"""The Prometheus metrics of `mlgate serve`, labelled with the model's name and version.

With several uvicorn workers each is its own process: prometheus-client's multiprocess mode (a
folder in PROMETHEUS_MULTIPROC_DIR, set by `mlgate serve` before the workers start) sums them, so
a scrape of any worker reports the whole server.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "mlgate_serve"
# Seconds; a CPU model answers in milliseconds, a batch or a large model in up to seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Scores are read as probabilities; anything outside 0..1 falls in the first or the +Inf bucket.
SCORE_BUCKETS = tuple(round(step * 0.05, 2) for step in range(21))
# Rows per model call: 1 for lone single-row requests, more as concurrent requests are batched.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Requests and errors by endpoint and status, request latency and scores, in one registry.

    Every prediction request is counted once in `requests`, whatever its answer; the `status` label tells a
    client error (4xx: the canary analysis does not hold it against the model) from the model's own (5xx)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # In multiprocess mode values live in the folder's files and a scrape collects them afresh.
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        model = ["model", "version"]
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Prediction requests answered, by endpoint and HTTP status.",
            [*model, "endpoint", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Prediction requests answered with an error, by endpoint and status: 4xx the request's fault (a body too "
            "large or unreadable, a value the model's signature refuses), 5xx the model's or the server's.",
            [*model, "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from a prediction request's arrival to its answer, parsing and prediction included.",
            [*model, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Histogram(
            f"{PREFIX}_score",
            "The scores the model returned, one observation per row.",
            model,
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            f"{PREFIX}_batch_rows",
            "Rows per call of the model: requests that arrive while it is busy are predicted together.",
            model,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def observe(
        self, model: str, version: str, endpoint: str, status: int, seconds: float, scores: list[float] | None
    ) -> None:
        code = str(status)
        self.requests.labels(model, version, endpoint, code).inc()
        if status >= 400:
            self.errors.labels(model, version, endpoint, code).inc()
        self.latency.labels(model, version, endpoint).observe(seconds)
        if scores:
            histogram = self.scores.labels(model, version)
            for score in scores:
                histogram.observe(score)

    def observe_batch(self, model: str, version: str, rows: int) -> None:
        self.batch_rows.labels(model, version).observe(rows)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape reads, and its content type."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
