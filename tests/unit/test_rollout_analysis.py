"""The canary analysis on synthetic windows: good canaries pass, erroring, slow and shifted ones fail with the
reason a user reads, too few samples keep baking, and a simulation of good rollouts shows the false-alarm rate the
budget promises.

Windows are drawn with fixed seeds: latencies lognormal and scores beta-distributed, binned into the buckets of
`mlgate serve` (mlgate.serve.metrics); errors binomial. Both models see the same population, as a random split
sends them, so a good canary is drawn from the stable model's own distributions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest
from mlgate.metrics import Bucket, Quantiles, Scores, ServerRef, WindowMetrics, bucket_quantile
from mlgate.rollout.analysis import (
    METRICS,
    TESTS_PER_ANALYSIS,
    Analysis,
    Check,
    Thresholds,
    alpha_per_test,
    analyse,
    homogeneity_pvalue,
    ks_distance,
    mann_whitney_greater,
    paired,
    population_stability_index,
)
from mlgate.rollout.pairs import PairSample
from mlgate.serve.metrics import LATENCY_BUCKETS, SCORE_BUCKETS
from pydantic import ValidationError
from scipy import stats

STABLE = ServerRef("fraud", "3")
CANARY = ServerRef("fraud", "4")
LATENCY_EDGES = np.array([*LATENCY_BUCKETS, math.inf])
SCORE_EDGES = np.array([*SCORE_BUCKETS, math.inf])
HAS_LATENCY_BUCKETS = "latency_buckets" in {f.name for f in dataclasses.fields(WindowMetrics)}
# A rollout of 4 steps of 3 analyses each, its tests sharing a 1 % false-alarm budget.
ALPHA = alpha_per_test(0.01, steps=4, analyses_per_step=3)


@dataclasses.dataclass(frozen=True)
class Model:
    """How a model server behaves: its error rate, its latency (lognormal) and its scores (beta, then shifted)."""

    error_rate: float = 0.01
    latency_median_s: float = 0.05
    latency_sigma: float = 0.6
    score_a: float = 2.0
    score_b: float = 5.0
    score_shift: float = 0.0


GOOD = Model()


@dataclasses.dataclass(frozen=True)
class Draw:
    """What one server answered in a window, request by request: error or not, latency, and the answers' scores."""

    errors: np.ndarray  # bool per request
    latencies: np.ndarray  # seconds per request
    scores: np.ndarray  # per request, NaN for an error (no score)

    def first(self, requests: int) -> Draw:
        """The window's first `requests`: a window that grows, as the controller reads one."""
        return Draw(self.errors[:requests], self.latencies[:requests], self.scores[:requests])


def draw(rng: np.random.Generator, requests: int, model: Model = GOOD) -> Draw:
    errors = rng.random(requests) < model.error_rate
    latencies = rng.lognormal(math.log(model.latency_median_s), model.latency_sigma, requests)
    scores = rng.beta(model.score_a, model.score_b, requests) + model.score_shift
    return Draw(errors, latencies, np.where(errors, np.nan, scores))


def cumulative(values: np.ndarray, edges: np.ndarray) -> tuple[Bucket, ...]:
    """Prometheus' cumulative buckets of `values`: how many at or below each bound (a score above 1 lands in +Inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges)).cumsum()
    return tuple(Bucket(float(le), float(count)) for le, count in zip(edges, counts, strict=True))


def metrics(answered: Draw, server: ServerRef, *, histogram: bool = True) -> WindowMetrics:
    """The WindowMetrics a provider reads for `answered`; `histogram=False` leaves out the latency buckets."""
    requests, errors = len(answered.errors), int(answered.errors.sum())
    scores = answered.scores[~np.isnan(answered.scores)]
    latency_buckets = cumulative(answered.latencies, LATENCY_EDGES)
    fields: dict[str, Any] = {
        "server": server,
        "provider": "scrape",
        "window_s": 60.0,
        "requests": float(requests),
        "errors": float(errors),
        "server_errors": float(errors),
        "error_rate": errors / requests if requests else None,
        "latency": Quantiles(*(bucket_quantile(q, latency_buckets) for q in (0.5, 0.95, 0.99))),
        "scores": Scores(
            float(len(scores)), float(scores.mean()) if len(scores) else None, cumulative(scores, SCORE_EDGES)
        ),
        "restarted": False,
    }
    # The field arrives with the providers' change; until then the analysis reads no histogram.
    if histogram and HAS_LATENCY_BUCKETS:
        fields["latency_buckets"] = latency_buckets
    return WindowMetrics(**fields)


def window(rng: np.random.Generator, requests: int, model: Model = GOOD, server: ServerRef = STABLE) -> WindowMetrics:
    return metrics(draw(rng, requests, model), server)


def pair(
    seed: int, requests: int, canary: Model = GOOD, stable: Model = GOOD, *, histogram: bool = True
) -> tuple[WindowMetrics, WindowMetrics]:
    """Stable's and the canary's windows, `requests` each."""
    rng = np.random.default_rng(seed)
    stable_window = metrics(draw(rng, requests, stable), STABLE, histogram=histogram)
    return stable_window, metrics(draw(rng, requests, canary), CANARY, histogram=histogram)


def with_counts(window_metrics: WindowMetrics, requests: float, errors: float) -> WindowMetrics:
    return dataclasses.replace(window_metrics, requests=requests, errors=errors, server_errors=errors)


def check(analysis: Analysis, metric: str) -> Check:
    return next(c for c in analysis.checks if c.metric == metric)


def verdicts(analysis: Analysis) -> dict[str, str]:
    return {c.metric: c.verdict for c in analysis.checks}


# --- verdicts a user relies on --------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "requests"), [(11, 1000), (12, 5000), (13, 20000)])
def test_a_canary_like_the_stable_model_passes(seed: int, requests: int) -> None:
    stable, canary = pair(seed, requests)
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert analysis.verdict == "pass", [c.reason for c in analysis.checks if c.verdict != "pass"]
    assert [c.metric for c in analysis.checks] == list(METRICS)
    assert check(analysis, "error_rate").reason.endswith("is within the 5.0% ceiling")


def test_without_latency_histograms_the_quantiles_decide_latency() -> None:
    stable, canary = pair(14, 2000, histogram=False)
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert analysis.verdict == "pass"
    latency = check(analysis, "latency_vs_stable")
    assert latency.reason.startswith("canary/stable p99 latency ratio ")  # p99s: 1000 or more a side
    assert latency.reason.endswith("is within the 1.5 tolerated (no histograms)")
    assert latency.pvalue is None  # no rank test without the buckets
    # Below min_latency_quantile_samples a p99 means little: the hard guard waits, the comparison uses medians.
    stable, canary = pair(14, 500, histogram=False)
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert check(analysis, "p99_latency").verdict == "inconclusive"
    assert "too few requests to pass (1000 needed)" in check(analysis, "p99_latency").reason
    assert check(analysis, "latency_vs_stable").reason.startswith("canary/stable median latency ratio ")
    slow_stable, slow_canary = pair(
        14, 1000, Model(latency_median_s=0.45), Model(latency_median_s=0.15), histogram=False
    )
    verdict = verdicts(analyse(slow_stable, slow_canary, Thresholds(), ALPHA))
    assert verdict["p99_latency"] == verdict["latency_vs_stable"] == "fail"


def test_a_canary_that_errs_fails_on_its_error_rate_with_the_figures() -> None:
    stable, canary = pair(21, 1000, Model(error_rate=0.10))
    # The counts drawn, set to round figures for the message: 10 % of the canary's requests, 1 % of stable's.
    stable, canary = with_counts(stable, 1000, 10), with_counts(canary, 1000, 100)
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert analysis.verdict == "fail"
    assert verdicts(analysis) == {
        "error_rate": "fail",
        "p99_latency": "pass",
        "error_rate_vs_stable": "fail",
        "latency_vs_stable": "pass",
        "score_psi": "pass",
        "score_ks": "pass",
    }
    errors = check(analysis, "error_rate")
    assert errors.reason == (
        "canary error rate 10.0% (100 5xx of 1000) is above the 5.0% ceiling (binomial p=8.4e-11, alpha 0.00014)"
    )
    assert errors.value == pytest.approx(0.10)
    assert errors.threshold == 0.05
    versus = check(analysis, "error_rate_vs_stable")
    assert versus.reason == (
        "canary error rate 10.0% (100 5xx of 1000) against the stable model's 1.0% (10 5xx of 1000), +9.0 points: "
        "above the +1.0 points tolerated (Fisher p=4.8e-21, alpha 0.00014)"
    )


def test_a_slow_canary_fails_on_latency_and_on_the_p99_budget_once_over_it() -> None:
    stable, canary = pair(31, 1000, Model(latency_median_s=0.15))  # 3x slower, p99 still under 1 s
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert analysis.verdict == "fail"
    assert {m for m, v in verdicts(analysis).items() if v == "fail"} == {"latency_vs_stable"}
    assert re.fullmatch(
        r"canary/stable median latency ratio 3\.\d\d: above the 1\.5 tolerated \(Mann-Whitney p=\S+, alpha 0\.00014\)",
        check(analysis, "latency_vs_stable").reason,
    )
    stable, canary = pair(32, 1000, Model(latency_median_s=0.45), Model(latency_median_s=0.15))
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert {m for m, v in verdicts(analysis).items() if v == "fail"} == {"p99_latency", "latency_vs_stable"}
    p99 = check(analysis, "p99_latency")
    assert p99.reason.startswith("canary p99 2.")
    assert (
        "% of 1000 requests (" in p99.reason
        and ") slower than the 1 s budget, over the budget (binomial p=" in p99.reason
    )
    assert check(analysis, "latency_vs_stable").reason.startswith("canary/stable p99 latency ratio ")


@pytest.mark.skipif(not HAS_LATENCY_BUCKETS, reason="WindowMetrics has no latency_buckets yet")
def test_histograms_with_different_buckets_are_compared_over_the_bounds_they_share() -> None:
    stable, canary = pair(33, 1000, Model(latency_median_s=0.15))
    coarser = tuple(
        bucket for i, bucket in enumerate(getattr(canary, "latency_buckets")) if i % 2 or math.isinf(bucket.le)
    )
    latency = check(
        analyse(stable, dataclasses.replace(canary, latency_buckets=coarser), Thresholds(), ALPHA), "latency_vs_stable"
    )
    assert latency.verdict == "fail"
    assert latency.pvalue is not None and latency.pvalue < 1e-50


def test_a_canary_whose_scores_shift_fails_on_psi_and_ks_though_it_never_errs_more() -> None:
    stable, canary = pair(41, 1000, Model(score_shift=0.2))
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert {m for m, v in verdicts(analysis).items() if v == "fail"} == {"score_psi", "score_ks"}
    assert check(analysis, "score_psi").reason.startswith("score PSI 3.")
    assert "above the 0.2 tolerated (chi-square p=" in check(analysis, "score_psi").reason
    assert "above the 0.15 tolerated (KS p=" in check(analysis, "score_ks").reason


def test_too_few_samples_keep_baking_and_never_pass() -> None:
    for seed in range(20):
        stable, canary = pair(100 + seed, 20)
        analysis = analyse(stable, canary, Thresholds(), ALPHA)
        assert analysis.verdict == "inconclusive"
        assert "pass" not in verdicts(analysis).values()
    assert check(analysis, "error_rate").reason.endswith("too few requests to pass (50 needed): keep baking")


def test_five_errors_of_five_fail_early_and_one_of_three_does_not() -> None:
    stable, canary = pair(51, 5, Model(error_rate=1.0))
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert analysis.verdict == "fail"
    assert check(analysis, "error_rate").reason.startswith(
        "canary error rate 100.0% (5 5xx of 5) is above the 5.0% ceiling"
    )
    stable, canary = pair(52, 3)
    analysis = analyse(stable, with_counts(canary, 3, 1), Thresholds(), ALPHA)
    assert analysis.verdict == "inconclusive"
    assert check(analysis, "error_rate").reason == (
        "canary error rate 33.3% (1 5xx of 3) is above the 5.0% ceiling, not yet significantly "
        "(binomial p=0.14, alpha 0.00014): keep baking"
    )


def test_a_side_without_requests_is_named() -> None:
    rng = np.random.default_rng(61)
    analysis = analyse(window(rng, 0), window(rng, 500, server=CANARY), Thresholds(), ALPHA)
    assert analysis.verdict == "inconclusive"
    assert check(analysis, "error_rate_vs_stable").reason == "the stable model served no requests in the window"
    assert check(analysis, "latency_vs_stable").reason == "the stable model served no requests in the window"
    assert check(analysis, "score_psi").reason == "the stable model returned no scores in the window"
    analysis = analyse(window(rng, 500), window(rng, 0, server=CANARY), Thresholds(), ALPHA)
    assert check(analysis, "error_rate").reason == "the canary model served no requests in the window"
    assert check(analysis, "p99_latency").verdict == "inconclusive"


def test_prometheus_extrapolated_counts_are_read_as_whole_requests() -> None:
    stable, canary = pair(71, 1000)
    analysis = analyse(with_counts(stable, 1000.4, 9.6), with_counts(canary, 999.6, 120.4), Thresholds(), ALPHA)
    assert check(analysis, "error_rate").reason.startswith("canary error rate 12.0% (120 5xx of 1000) is above")


def refused(window_metrics: WindowMetrics, client_errors: int, server_errors: int | None = None) -> WindowMetrics:
    """The window with `client_errors` more requests refused as 4xx (and, when given, `server_errors` 5xx)."""
    errors = window_metrics.server_errors if server_errors is None else float(server_errors)
    return dataclasses.replace(
        window_metrics,
        requests=window_metrics.requests + client_errors,
        errors=errors + client_errors,
        server_errors=errors,
    )


def test_client_errors_sent_to_both_models_do_not_roll_a_good_canary_back() -> None:
    # Clients send bad rows (a string for a number, NaN in a required column) to both models: each refuses
    # 1500 requests with a 400 beside the 1000 it answers, about 1 % of them with a 5xx.
    stable, canary = pair(81, 1000)
    stable, canary = refused(stable, 1500), refused(canary, 1500)
    analysis = analyse(stable, canary, Thresholds(), ALPHA)
    assert analysis.verdict == "pass", [c.reason for c in analysis.checks if c.verdict != "pass"]
    errors, versus = check(analysis, "error_rate"), check(analysis, "error_rate_vs_stable")
    assert errors.value is not None and errors.value < 0.02  # ~1 % of 1000 answered, not ~60 % of 2500
    assert errors.reason.endswith("; 1500 client errors (4xx) not held against it) is within the 5.0% ceiling")
    assert "of 1000; 1500 client errors (4xx) not held against it) against the stable model's" in versus.reason
    # The same refusals do not hide a canary that fails a tenth of what it answers: many 5xx fail it.
    failing = refused(pair(81, 1000)[1], 1500, server_errors=100)
    analysis = analyse(stable, failing, Thresholds(), ALPHA)
    assert (verdicts(analysis)["error_rate"], verdicts(analysis)["error_rate_vs_stable"]) == ("fail", "fail")
    assert check(analysis, "error_rate").reason.startswith("canary error rate 10.0% (100 5xx of 1000; 1500 client")


def test_a_canary_that_refuses_every_request_has_answered_none() -> None:
    stable, canary = pair(82, 300)
    nothing = dataclasses.replace(canary, requests=40.0, errors=40.0, server_errors=0.0)
    analysis = analyse(stable, nothing, Thresholds(), ALPHA)
    assert check(analysis, "error_rate").reason == (
        "the canary model answered no requests in the window: all 40 were client errors (4xx)"
    )
    assert check(analysis, "error_rate").verdict == "inconclusive"


def test_the_report_says_what_the_error_rates_count() -> None:
    from mlgate.rollout.report import markdown

    record = {
        "canary": {"model": "fraud", "version": "4"},
        "stable": {"model": "fraud", "version": "3"},
        "outcome": "promoted",
        "plan": {"false_alarm_budget": 0.01, "alpha_per_test": ALPHA},
        "steps": [],
    }
    text = markdown(record)
    assert "- errors: the model's own (5xx); client errors (4xx) are not held against it" in text
    assert "| errors (5xx) |" in text


def test_records_are_json() -> None:
    stable, canary = pair(72, 300)
    record = analyse(stable, canary, Thresholds(), ALPHA).to_json()
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert [c["metric"] for c in record["checks"]] == list(METRICS)
    assert set(record["checks"][0]) == {"metric", "value", "threshold", "verdict", "reason", "pvalue"}


# --- the false-alarm budget -----------------------------------------------------------------------------------

# The simulated rollout: the canary's share of each step's traffic, and the looks per step at a growing window.
SHARES = (0.05, 0.25, 0.5, 0.75)
LOOKS = 3
STEP_REQUESTS = 4000
ROLLOUTS = 500


def test_good_canaries_are_rarely_rolled_back(capsys: pytest.CaptureFixture[str]) -> None:
    """500 rollouts of a canary identical to the stable model: the share rolled back stays within the budget.

    The bound: were the true rate at the 1 % budget, 500 rollouts would show more than 15 rollbacks (3 %) with
    probability binom.sf(15, 500, 0.01) < 1e-4; Bonferroni's union bound puts the true rate below 1 %.
    """
    budget = 0.01
    alpha = alpha_per_test(budget, steps=len(SHARES), analyses_per_step=LOOKS)
    assert alpha == budget / (len(SHARES) * LOOKS * TESTS_PER_ANALYSIS)
    rng = np.random.default_rng(20260101)
    rolled_back: list[str] = []
    last_look: Counter[str] = Counter()
    waiting: Counter[str] = Counter()  # which checks kept a step's last look inconclusive
    for _ in range(ROLLOUTS):
        failing = ""
        for share in SHARES:
            canary_n = round(STEP_REQUESTS * share)
            stable_draw, canary_draw = draw(rng, STEP_REQUESTS - canary_n), draw(rng, canary_n)
            for look in range(1, LOOKS + 1):
                stable = metrics(stable_draw.first(len(stable_draw.errors) * look // LOOKS), STABLE)
                canary = metrics(canary_draw.first(canary_n * look // LOOKS), CANARY)
                analysis = analyse(stable, canary, Thresholds(false_alarm_budget=budget), alpha)
                failing = failing or ", ".join(c.metric for c in analysis.checks if c.verdict == "fail")
            last_look[analysis.verdict] += 1
            waiting.update(c.metric for c in analysis.checks if c.verdict == "inconclusive")
        if failing:
            rolled_back.append(failing)
    rate = len(rolled_back) / ROLLOUTS
    with capsys.disabled():
        print(
            f"\nfalse alarms: {len(rolled_back)} of {ROLLOUTS} good rollouts rolled back ({rate:.1%}, "
            f"budget {budget:.0%}, alpha per test {alpha:.2g}); by: {Counter(rolled_back) or 'none'}; "
            f"steps' last look: {dict(last_look)}, inconclusive on {dict(waiting)}"
        )
    assert stats.binom.sf(15, ROLLOUTS, budget) < 1e-4
    assert rate <= 0.03
    # Every step's last look (a third of the step's traffic or more a side) lets a good canary go on.
    assert last_look["pass"] >= 0.95 * ROLLOUTS * len(SHARES)


def test_psi_and_ks_do_not_fail_good_canaries_at_min_samples() -> None:
    """PSI's small-sample bias: over 21 buckets, 50 scores a side give identical models a PSI near 1, five times
    the 0.2 threshold. The PSI check then keeps baking (its chi-square test is not significant), never fails."""
    thresholds = Thresholds()
    error_free = Model(error_rate=0.0)  # one score per request: exactly min_samples scores a side
    psis: list[float] = []
    for seed in range(200):
        stable, canary = pair(1000 + seed, thresholds.min_samples, error_free, error_free)
        analysis = analyse(stable, canary, thresholds, ALPHA)
        scores = [check(analysis, "score_psi"), check(analysis, "score_ks")]
        assert all(c.verdict != "fail" for c in scores), [c.reason for c in scores]
        psis.append(float(scores[0].value or 0.0))
    assert np.mean(np.array(psis) > thresholds.max_psi) > 0.9  # PSI alone would have failed nearly all of them
    # With enough scores the bias is gone and the same canaries pass.
    stable, canary = pair(999, 2000)
    assert check(analyse(stable, canary, thresholds, ALPHA), "score_psi").verdict == "pass"


def test_each_test_holds_its_level_on_good_canaries() -> None:
    """At a loose alpha of 1 %, identical models at 100 requests a side give p < alpha in at most about 1 % of
    windows, test by test: the chance Bonferroni hands each test is the chance it spends. (PSI's own chi-square
    approximation, n_eff * PSI, would give 14 % here, which is why its significance is Pearson's test.)"""
    loose, windows = 0.01, 400
    significant: Counter[str] = Counter()
    for seed in range(windows):
        stable, canary = pair(5000 + seed, 100)
        analysis = analyse(stable, canary, Thresholds(), loose)
        significant.update(c.metric for c in analysis.checks if c.pvalue is not None and c.pvalue < loose)
    # Were a test's true level 1 %, more than 12 of 400 would happen with probability under 0.002.
    assert stats.binom.sf(12, windows, loose) < 0.002
    assert all(count <= 12 for count in significant.values()), significant


# --- thresholds and the budget's arithmetic -------------------------------------------------------------------


def test_thresholds_out_of_their_domain_are_refused_naming_each_field() -> None:
    assert Thresholds() == Thresholds.model_validate({})
    wrong = {
        "max_error_rate": 1.5,
        "max_p99_s": 0.0,
        "min_samples": 0,
        "min_latency_quantile_samples": -1,
        "max_error_increase": float("nan"),
        "max_latency_ratio": 0.9,
        "max_psi": -0.1,
        "max_ks": 1.2,
        "max_disagreement": -0.01,
        "max_score_diff": 0.0,
        "decision_threshold": float("inf"),
        "false_alarm_budget": 0.5,
    }
    with pytest.raises(ValidationError) as refused:
        Thresholds.model_validate(wrong)
    assert sorted(str(error["loc"][0]) for error in refused.value.errors()) == sorted(wrong)
    for name, value in [*wrong.items(), ("max_p99_s", float("inf")), ("false_alarm_budget", 0.0)]:
        with pytest.raises(ValidationError) as one:
            Thresholds.model_validate({name: value})
        assert [error["loc"] for error in one.value.errors()] == [(name,)], name


def test_alpha_per_test_is_bonferroni() -> None:
    assert alpha_per_test(0.01, 4, 3, 4) == pytest.approx(0.01 / 48)
    assert alpha_per_test(0.01, 4, 3) == pytest.approx(0.01 / (12 * TESTS_PER_ANALYSIS))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        alpha_per_test(0.01, 0, 3)
    with pytest.raises(ValueError, match="budget"):
        alpha_per_test(1.5, 4, 3)


# --- the statistics on histograms agree with scipy on the expanded samples -----------------------------------


def expand(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts), dtype=float), counts)


def test_the_histogram_statistics_agree_with_scipy() -> None:
    rng = np.random.default_rng(81)
    stable_counts = [int(c) for c in rng.multinomial(3000, [0.1, 0.2, 0.3, 0.2, 0.1, 0.05, 0.05])]
    canary_counts = [int(c) for c in rng.multinomial(700, [0.08, 0.18, 0.3, 0.22, 0.12, 0.05, 0.05])]
    canary, stable = expand(canary_counts), expand(stable_counts)
    expected_u = stats.mannwhitneyu(canary, stable, alternative="greater", method="asymptotic").pvalue
    assert mann_whitney_greater(canary_counts, stable_counts) == pytest.approx(expected_u, rel=1e-9)
    assert ks_distance(stable_counts, canary_counts) == pytest.approx(stats.ks_2samp(stable, canary).statistic)
    # Every bucket holds well over 5 a side here, so none is merged.
    expected_chi2 = stats.chi2_contingency([stable_counts, canary_counts], correction=False).pvalue
    assert homogeneity_pvalue(stable_counts, canary_counts) == pytest.approx(expected_chi2, rel=1e-9)
    shares = np.array(canary_counts) / 700 - np.array(stable_counts) / 3000
    ratios = np.log((np.array(canary_counts) / 700) / (np.array(stable_counts) / 3000))
    assert population_stability_index(stable_counts, canary_counts) == pytest.approx(float(np.sum(shares * ratios)))
    assert population_stability_index([10, 0], [5, 5]) == pytest.approx(
        (0.5 - 1) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    )


def pairs_of(
    rng: np.random.Generator, n: int, *, noise: float = 0.0, shift: float = 0.0, flip: float = 0.0
) -> PairSample:
    """`n` paired scores: the canary's is the stable's plus `shift` and Gaussian `noise`; a share `flip` mirrored."""
    stable = rng.beta(2, 5, n)
    canary = np.clip(stable + shift + rng.normal(0, noise, n) if noise else stable + shift, 0, 1)
    flipped = rng.random(n) < flip
    canary[flipped] = 1 - stable[flipped]
    return PairSample([float(v) for v in stable], [float(v) for v in canary])


def paired_verdicts(sample: PairSample, **thresholds: Any) -> dict[str, Check]:
    return {found.metric: found for found in paired(sample, Thresholds(min_samples=50, **thresholds), ALPHA)}


def test_paired_scores_of_the_same_model_pass_and_a_retrained_twin_within_tolerance_too() -> None:
    rng = np.random.default_rng(7)
    same = paired_verdicts(pairs_of(rng, 200))
    assert {m: c.verdict for m, c in same.items()} == {"shadow_agreement": "pass", "shadow_score_diff": "pass"}
    assert same["shadow_score_diff"].value == 0.0 and same["shadow_agreement"].value == 0.0
    twin = paired_verdicts(pairs_of(rng, 2000, noise=0.02))  # small differences of its own, mean about 0.016
    assert {c.verdict for c in twin.values()} == {"pass"}, twin


def test_paired_scores_that_shift_or_flip_fail_with_the_figures() -> None:
    rng = np.random.default_rng(8)
    shifted = paired_verdicts(pairs_of(rng, 200, shift=0.3))
    assert shifted["shadow_score_diff"].verdict == "fail"
    assert "the paired scores differ by" in shifted["shadow_score_diff"].reason
    assert "tolerated mean difference of 0.1" in shifted["shadow_score_diff"].reason
    flipped = paired_verdicts(pairs_of(rng, 400, flip=0.3))
    assert flipped["shadow_agreement"].verdict == "fail", flipped["shadow_agreement"]
    assert re.search(r"the models disagree on \d+ of 400 paired rows", flipped["shadow_agreement"].reason)
    assert flipped["shadow_agreement"].pvalue is not None and flipped["shadow_agreement"].pvalue < ALPHA


def test_too_few_pairs_keep_baking_and_none_is_said() -> None:
    rng = np.random.default_rng(9)
    few = paired_verdicts(pairs_of(rng, 20, shift=0.3))
    assert {c.verdict for c in few.values()} == {"inconclusive"}
    assert "50 pairs needed" in few["shadow_score_diff"].reason
    none = paired_verdicts(PairSample())
    assert {c.verdict for c in none.values()} == {"inconclusive"}
    assert "no paired predictions yet" in none["shadow_agreement"].reason


def test_analyse_adds_the_paired_checks_only_when_given_pairs() -> None:
    rng = np.random.default_rng(10)
    stable, canary = pair(10, 400)
    assert [c.metric for c in analyse(stable, canary, Thresholds(), ALPHA).checks] == list(METRICS)
    with_pairs = analyse(stable, canary, Thresholds(), ALPHA, pairs=pairs_of(rng, 300, shift=0.3))
    assert [c.metric for c in with_pairs.checks] == [*METRICS, "shadow_agreement", "shadow_score_diff"]
    assert with_pairs.verdict == "fail"
