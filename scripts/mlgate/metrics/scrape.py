"""The `scrape` metric provider: a server's own `/metrics`, read twice, and what changed between the two reads.

No Prometheus needed: the provider keeps each server's previous scrape and reports the differences of its
counters and histogram buckets. A server that restarted between two scrapes (its counters went down, or
a series' `_created` time changed) is measured from its restart, as Prometheus' `increase` does, and the
result says `restarted`.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    bucket_quantile,
    error_rate,
    public_url,
)

DEFAULT_TIMEOUT_S = 5.0
# Sample names whose value only grows while the process lives (a histogram's _sum may fall for negative
# observations, so it is carried but not used to detect a restart).
_GROWING = ("_total", "_bucket", "_count")
_CARRIED = (*_GROWING, "_sum")

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Snapshot:
    """One scrape: every `mlgate_serve_*` sample by name and labels, and when it was taken (monotonic seconds)."""

    taken_at: float
    samples: Mapping[SeriesKey, float]
    families: frozenset[str]


def key(name: str, labels: Mapping[str, str]) -> SeriesKey:
    return name, tuple(sorted(labels.items()))


def parse(text: str, taken_at: float = 0.0) -> Snapshot:
    """The `mlgate_serve_*` samples of a Prometheus text exposition (ValueError when it is not one)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[SeriesKey, float] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("mlgate_serve_"):
            continue
        families.add(family.name)
        for sample in family.samples:
            samples[key(sample.name, sample.labels)] = float(sample.value)
    return Snapshot(taken_at, samples, frozenset(families))


def _labels(series: SeriesKey) -> tuple[str, dict[str, str]]:
    return series[0], dict(series[1])


def _of_server(snapshot: Snapshot, server: ServerRef) -> dict[SeriesKey, float]:
    wanted = {"model": server.model, "version": server.version}
    return {
        series: value
        for series, value in snapshot.samples.items()
        if all(dict(series[1]).get(label) == expected for label, expected in wanted.items())
    }


def difference(previous: Snapshot | None, current: Snapshot, server: ServerRef) -> tuple[dict[SeriesKey, float], bool]:
    """The increase of each of the server's series from `previous` to `current`, and whether it restarted.

    A restart resets every series of the process at once, so it is judged for the server as a whole: a
    growing series that fell or vanished, or a `_created` time that changed. Then the increase is the
    current value (counted from the restart); what happened between the last scrape and the restart is
    lost, as it is to Prometheus.
    """
    now = _of_server(current, server)
    if previous is None:
        return {series: value for series, value in now.items() if series[0].endswith(_CARRIED)}, False
    before = _of_server(previous, server)
    restarted = False
    for series, value in before.items():
        name = series[0]
        if name.endswith("_created"):
            if series in now and now[series] != value:
                restarted = True
        elif name.endswith(_GROWING) and (series not in now or now[series] < value):
            restarted = True
    increases: dict[SeriesKey, float] = {}
    for series, value in now.items():
        if not series[0].endswith(_CARRIED):
            continue
        increases[series] = value if restarted else value - before.get(series, 0.0)
    return increases, restarted


def _sum(
    increases: Mapping[SeriesKey, float], name: str, keep: Callable[[dict[str, str]], bool] | None = None
) -> float:
    return sum(
        value
        for (sample, labels), value in increases.items()
        if sample == name and (keep is None or keep(dict(labels)))
    )


def _buckets(increases: Mapping[SeriesKey, float], histogram: str) -> tuple[Bucket, ...]:
    """The histogram's buckets summed over its other labels (endpoints), as `sum by (le)` does."""
    by_bound: dict[float, float] = {}
    for (sample, labels), value in increases.items():
        if sample == f"{histogram}_bucket":
            bound = float(dict(labels)["le"])
            by_bound[bound] = by_bound.get(bound, 0.0) + value
    return tuple(Bucket(le, count) for le, count in sorted(by_bound.items()))


def measure(previous: Snapshot | None, current: Snapshot, server: ServerRef, provider: str = "scrape") -> WindowMetrics:
    """What the server did between two scrapes (since its start when there is no previous one)."""
    increases, restarted = difference(previous, current, server)
    requests = _sum(increases, REQUESTS)
    errors = _sum(increases, ERRORS)
    server_errors = _sum(increases, ERRORS, lambda labels: labels.get("status", "").startswith("5"))
    latency = _buckets(increases, LATENCY)
    p50, p95, p99 = (bucket_quantile(q, latency) for q in QUANTILES)
    score_count = _sum(increases, f"{SCORE}_count")
    score_sum = _sum(increases, f"{SCORE}_sum")
    return WindowMetrics(
        server=server,
        provider=provider,
        window_s=None if previous is None else current.taken_at - previous.taken_at,
        requests=requests,
        errors=errors,
        server_errors=server_errors,
        error_rate=error_rate(server_errors, requests, max(errors - server_errors, 0.0)),
        latency=Quantiles(p50, p95, p99),
        scores=Scores(score_count, score_sum / score_count if score_count > 0 else None, _buckets(increases, SCORE)),
        restarted=restarted,
        latency_buckets=latency,
    )


def fetch(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The text at `url`, or a MetricsError naming it: not reachable, not answering in time, an HTTP error."""
    shown = public_url(url)
    request = urllib.request.Request(url, headers={"Accept": "text/plain; version=0.0.4"})  # noqa: S310 (http(s) only: checked by the caller)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            body: bytes = answer.read()
            charset = answer.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as exc:
        raise MetricsError(
            f"metrics endpoint {shown} answered HTTP {exc.code} {exc.reason}",
            hint="check the URL points at a running `mlgate serve` (its /metrics path)",
        ) from None
    except TimeoutError:
        raise _timed_out(shown, timeout_s) from None
    except OSError as exc:  # URLError (refused, no such host) and a connection reset
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise _timed_out(shown, timeout_s) from None
        raise MetricsError(
            f"metrics endpoint {shown} cannot be reached: {reason}",
            hint="the model server stopped or moved; check that it runs and listens on that address",
        ) from None
    return body.decode(charset, errors="replace")


def _timed_out(shown: str, timeout_s: float) -> MetricsError:
    return MetricsError(
        f"metrics endpoint {shown} did not answer within {timeout_s:g} s",
        hint="the server may be overloaded or hung; check it, or give the provider a longer timeout",
    )


class ScrapeProvider:
    """Reads `<server url>/metrics` and measures each window between two of its own scrapes of that server."""

    name = "scrape"

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self._previous: dict[tuple[str, str, str], Snapshot] = {}

    def scrape(self, server: ServerRef) -> Snapshot:
        url = metrics_url(server)
        text = fetch(url, self.timeout_s)
        try:
            snapshot = parse(text, self.clock())
        except (ValueError, IndexError, KeyError) as exc:  # prometheus-client's parser raises more than ValueError
            raise MetricsError(
                f"metrics endpoint {public_url(url)} did not answer in Prometheus' text format: {exc}",
                hint="point the provider at a `mlgate serve` server's base URL",
            ) from None
        if REQUESTS.removesuffix("_total") not in snapshot.families:
            raise MetricsError(
                f"metrics endpoint {public_url(url)} does not export {REQUESTS}: it is not a `mlgate serve` server",
                hint="point the provider at a `mlgate serve` server's base URL",
            )
        served = {(labels.get("model"), labels.get("version")) for _, labels in map(_labels, snapshot.samples)}
        served.discard((None, None))
        if served and (server.model, server.version) not in served:
            # Counting zero here would pass a canary that never ran: another version answers at this URL.
            found = ", ".join(f"{model} version {version}" for model, version in sorted(served, key=str))
            raise MetricsError(
                f"metrics endpoint {public_url(url)} reports {found}, not {server.model} version {server.version}",
                hint="check which model version that server runs (its /ready answer) and the URL given for it",
            )
        return snapshot

    def start(self, server: ServerRef) -> None:
        """Open a window: scrape now, so the next `read` measures from here."""
        self._previous[self._key(server)] = self.scrape(server)

    def read(self, server: ServerRef, window_s: float | None = None, *, advance: bool = True) -> WindowMetrics:
        """What the server did since the previous scrape of it (`start` or `read`); that scrape is then replaced,
        unless `advance` is False (the window then keeps its start, and grows with each read).

        `window_s` is not used: the window is the time between the two scrapes, reported in the result.
        Without an earlier scrape the counts run from the server's start.
        """
        current = self.scrape(server)
        previous = self._previous.get(self._key(server))
        if advance or previous is None:
            self._previous[self._key(server)] = current
        return measure(previous, current, server, self.name)

    @staticmethod
    def _key(server: ServerRef) -> tuple[str, str, str]:
        return metrics_url(server), server.model, server.version


def metrics_url(server: ServerRef) -> str:
    if not server.url:
        raise MetricsError(
            f"the scrape provider needs the base URL of {server.describe()}",
            hint="give the server's URL, e.g. http://127.0.0.1:8080",
        )
    if not server.url.startswith(("http://", "https://")):
        raise MetricsError(
            f"the server URL {public_url(server.url)} is not an http:// or https:// URL",
            hint="give the server's base URL, e.g. http://127.0.0.1:8080",
        )
    return server.url.rstrip("/") + "/metrics"


if TYPE_CHECKING:  # mypy checks the provider against the interface the canary analysis uses
    from mlgate.metrics import MetricsProvider

    _conforms: MetricsProvider = ScrapeProvider()
