"""Canary analysis: whether a canary model, served beside the stable one over the same window, fails, passes or
must keep baking.

Six checks, each with a stable id (the `metric` of a `Check`, in the JSON records):

- `error_rate` and `p99_latency`, hard guards on the canary alone: its error rate against a ceiling, and the share
  of its requests slower than the p99 budget against 1 % (p99 above the budget is exactly "more than 1 % slower
  than it"), each by a one-sided exact binomial test;
- `error_rate_vs_stable` (Fisher's exact test, one-sided), `latency_vs_stable` (Mann-Whitney U on the two latency
  histograms, one-sided, as Kayenta does), `score_psi` and `score_ks` (the score distributions): comparisons with
  the stable model. A random split sends both models the same population, so a difference is the model's own.

Errors are the model's own (5xx: it raised, or the server failed), over the requests it was asked to answer.
Client errors (4xx: a body too large or unreadable, a value the model's signature refuses) are not held against
it: they are refused before the model runs, so they are neither errors nor trials, and clients sending bad rows
to both models cannot roll a good canary back (nor hide a bad one's errors among their refusals).

A shadow step (nginx mirrors every request to the canary, whose answers are thrown away) adds two checks on the
paired predictions, the two models' scores for the same rows joined on the request id (mlgate.rollout.pairs):
`shadow_agreement` (the share of rows put on different sides of the decision threshold, exact binomial test) and
`shadow_score_diff` (the mean absolute score difference, t-test on the absolute differences).

Every check has three zones. It fails only when the effect is beyond its practical threshold *and* its test's
p-value is below `alpha`: noise alone does not fail a canary, and neither does a difference too small to matter
that a large window makes significant. It passes when the effect is within the threshold and each side has at
least `min_samples`. Anything else (too few samples, or an effect beyond the threshold that is not yet
significant) is inconclusive, "keep baking": with a window that grows, more samples decide it; at the step's
deadline the controller rolls back. A check never passes on too few samples. Only the exact tests of the error
checks and of the p99 guard fail before `min_samples` (5 errors out of 5 requests is evidence enough).

The false-alarm budget (`Thresholds.false_alarm_budget`, the chance that a rollout rolls back a good canary: one
identical to the stable model in every comparison and within both hard limits) is spread by Bonferroni
(`alpha_per_test`): each of the TESTS_PER_ANALYSIS tests of each analysis of each step runs at
alpha = budget / (steps * analyses per step * tests). Since a good canary fails only through some test's p < alpha,
the union bound keeps the rollout's false-alarm chance within the budget whatever the dependence between the tests
and looks (a growing window, PSI and KS on the same scores). That makes it conservative: those tests are positively
correlated, so part of the budget goes unspent (an alpha-spending rule, e.g. O'Brien-Fleming, spends it more
tightly, at the price of fixing the looks in advance); tests/unit/test_rollout_analysis.py measures the rate.

SciPy is imported by `analyse` only: the controller's plan is built in a venv that may lack it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mlgate.config import RolloutThresholdsConfig
from mlgate.metrics import Bucket, WindowMetrics
from mlgate.rollout.pairs import PairSample

Verdict = Literal["pass", "fail", "inconclusive"]

# The checks, in the order `analyse` reports them. Each runs a test at `alpha`, except the two latency checks when a
# provider reads no latency histogram: they then compare quantiles, with no test and outside the budget.
METRICS = ("error_rate", "p99_latency", "error_rate_vs_stable", "latency_vs_stable", "score_psi", "score_ks")
TESTS_PER_ANALYSIS = len(METRICS)
# A shadow step's two more, on the paired predictions (the same request answered by both models).
PAIRED_METRICS = ("shadow_agreement", "shadow_score_diff")
# p99 above the budget <=> more than this share of the requests slower than the budget.
P99_SHARE = 0.01
# Share given to a score bucket that one side leaves empty, so PSI stays finite (mlgate.data.drift's convention).
PSI_EPSILON = 1e-4


# What fails a canary (hard limits on the canary alone, practical margins over the stable model, samples): one
# definition, the `rollout.thresholds` model of mlgate.yaml, whose fields say each one's domain and default.
Thresholds = RolloutThresholdsConfig


def alpha_per_test(budget: float, steps: int, analyses_per_step: int, tests: int = TESTS_PER_ANALYSIS) -> float:
    """The significance level of each test: `budget` split evenly over every test of every analysis (Bonferroni)."""
    if not 0 < budget < 1:
        raise ValueError(f"the false-alarm budget is a probability in (0, 1), not {budget!r}")
    for name, count in (("steps", steps), ("analyses_per_step", analyses_per_step), ("tests", tests)):
        if count < 1:
            raise ValueError(f"{name} must be at least 1, not {count!r}")
    return budget / (steps * analyses_per_step * tests)


@dataclass(frozen=True)
class Check:
    """One check's outcome: the figure measured, the threshold it is held to, the verdict and why, in one sentence.

    `value` is in the threshold's unit (a rate, seconds, a ratio, PSI, KS distance); None when not measurable.
    `pvalue` is the check's test's p-value, None when no test ran.
    """

    metric: str
    value: float | None
    threshold: float
    verdict: Verdict
    reason: str
    pvalue: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: _finite(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Analysis:
    """The verdict of one analysis: fail if any check fails, else inconclusive if any is, else pass."""

    verdict: Verdict
    checks: list[Check] = field(default_factory=list)
    alpha: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "alpha": self.alpha, "checks": [check.to_json() for check in self.checks]}


def analyse(
    stable: WindowMetrics,
    canary: WindowMetrics,
    thresholds: Thresholds,
    alpha: float,
    *,
    compare: bool = True,
    pairs: PairSample | None = None,
) -> Analysis:
    """Judge `canary` against its hard limits and against `stable` over the same window, each test at `alpha`.

    `compare=False` runs the hard guards alone: at a step where the canary takes every request the stable
    model serves none, and a comparison could never be more than inconclusive. `pairs` (a shadow step) adds the
    two checks on the predictions both models made for the same requests."""
    checks = [_error_rate(canary, thresholds, alpha), _p99_latency(canary, thresholds, alpha)]
    if compare:
        checks += [
            _error_rate_vs_stable(stable, canary, thresholds, alpha),
            _latency_vs_stable(stable, canary, thresholds, alpha),
            *_scores(stable, canary, thresholds, alpha),
        ]
    if pairs is not None:
        checks += paired(pairs, thresholds, alpha)
    return Analysis(overall(checks), checks, alpha)


def overall(checks: list[Check]) -> Verdict:
    verdicts = {check.verdict for check in checks}
    if "fail" in verdicts:
        return "fail"
    return "inconclusive" if "inconclusive" in verdicts else "pass"


# --- the hard guards --------------------------------------------------------------------------------------------


def _error_rate(canary: WindowMetrics, t: Thresholds, alpha: float) -> Check:
    from scipy import stats

    metric, ceiling = "error_rate", t.max_error_rate
    requests, errors = _count(canary.answered), _count(canary.server_errors)
    if requests == 0:
        return Check(metric, None, ceiling, "inconclusive", _no_requests("canary", canary))
    errors = min(errors, requests)
    rate = errors / requests
    observed = f"canary error rate {rate:.1%} ({errors} 5xx of {requests}{_refused(canary)})"
    pvalue = float(stats.binomtest(errors, requests, ceiling, alternative="greater").pvalue)
    test = f"binomial p={_p(pvalue)}, alpha {_p(alpha)}"
    if rate > ceiling and pvalue < alpha:
        return Check(metric, rate, ceiling, "fail", f"{observed} is above the {ceiling:.1%} ceiling ({test})", pvalue)
    if rate > ceiling:
        return Check(
            metric,
            rate,
            ceiling,
            "inconclusive",
            f"{observed} is above the {ceiling:.1%} ceiling, not yet significantly ({test}): keep baking",
            pvalue,
        )
    if requests < t.min_samples:
        return Check(metric, rate, ceiling, "inconclusive", _too_few(observed, "requests", t.min_samples), pvalue)
    return Check(metric, rate, ceiling, "pass", f"{observed} is within the {ceiling:.1%} ceiling", pvalue)


def _p99_latency(canary: WindowMetrics, t: Thresholds, alpha: float) -> Check:
    from scipy import stats

    metric, budget = "p99_latency", t.max_p99_s
    requests, p99 = _count(canary.requests), canary.latency.p99
    if requests == 0:
        return Check(metric, None, budget, "inconclusive", _no_requests("canary"))
    shown = f"canary p99 {_seconds(p99)}" if p99 is not None else "canary p99 unknown"
    buckets = _latency_buckets(canary)
    if not buckets:
        # No histogram, no test: the quantile itself, once there are enough samples for a p99 to mean anything.
        if p99 is None or requests < t.min_latency_quantile_samples:
            return Check(
                metric,
                p99,
                budget,
                "inconclusive",
                _too_few(f"{shown} (no latency histogram)", "requests", t.min_latency_quantile_samples),
            )
        verdict: Verdict = "fail" if p99 > budget else "pass"
        word = "over" if p99 > budget else "within"
        reason = f"{shown} from {requests} requests is {word} the {_seconds(budget)} budget (no latency histogram)"
        return Check(metric, p99, budget, verdict, reason)
    # The histogram counts every request; its own total keeps the share consistent if the counters disagree.
    requests = _count(buckets[-1][1])
    if requests == 0:
        return Check(metric, None, budget, "inconclusive", "the canary's latency histogram is empty in the window")
    slow = min(_count(buckets[-1][1] - _cumulative_at(buckets, budget)), requests)
    share = slow / requests
    pvalue = float(stats.binomtest(slow, requests, P99_SHARE, alternative="greater").pvalue)
    observed = f"{shown}: {share:.1%} of {requests} requests ({slow}) slower than the {_seconds(budget)} budget"
    test = f"binomial p={_p(pvalue)} against {P99_SHARE:.0%}, alpha {_p(alpha)}"
    if share > P99_SHARE and pvalue < alpha:
        return Check(metric, p99, budget, "fail", f"{observed}, over the budget ({test})", pvalue)
    if share > P99_SHARE:
        reason = f"{observed}, over the budget but not yet significantly ({test}): keep baking"
        return Check(metric, p99, budget, "inconclusive", reason, pvalue)
    if requests < t.min_samples:
        return Check(metric, p99, budget, "inconclusive", _too_few(observed, "requests", t.min_samples), pvalue)
    return Check(metric, p99, budget, "pass", f"{observed}, within the budget", pvalue)


# --- comparisons with the stable model --------------------------------------------------------------------------


def _error_rate_vs_stable(stable: WindowMetrics, canary: WindowMetrics, t: Thresholds, alpha: float) -> Check:
    from scipy import stats

    metric, margin = "error_rate_vs_stable", t.max_error_increase
    missing = _missing_requests(stable, canary, answered=True)
    if missing:
        return Check(metric, None, margin, "inconclusive", missing)
    stable_n, canary_n = _count(stable.answered), _count(canary.answered)
    stable_e, canary_e = min(_count(stable.server_errors), stable_n), min(_count(canary.server_errors), canary_n)
    increase = canary_e / canary_n - stable_e / stable_n
    # Fisher's exact test rather than the pooled z-test: canaries err rarely, and a handful of errors is exactly
    # where the z-test's normal approximation fails; scipy computes it from the hypergeometric distribution, in
    # constant time at any number of requests. Conditional on the errors' total, it is slightly conservative.
    table = [[canary_e, canary_n - canary_e], [stable_e, stable_n - stable_e]]
    pvalue = float(stats.fisher_exact(table, alternative="greater").pvalue)
    observed = (
        f"canary error rate {canary_e / canary_n:.1%} ({canary_e} 5xx of {canary_n}{_refused(canary)}) against "
        f"the stable model's {stable_e / stable_n:.1%} ({stable_e} 5xx of {stable_n}{_refused(stable)}), "
        f"{_points(increase)}"
    )
    test = f"Fisher p={_p(pvalue)}, alpha {_p(alpha)}"
    enough = min(stable_n, canary_n) >= t.min_samples
    return _three_zones(
        metric,
        increase,
        margin,
        pvalue,
        alpha,
        enough,
        observed,
        test,
        f"{_points(margin)} tolerated",
        _needed(t, "requests"),
    )


def _latency_vs_stable(stable: WindowMetrics, canary: WindowMetrics, t: Thresholds, alpha: float) -> Check:
    metric, margin = "latency_vs_stable", t.max_latency_ratio
    missing = _missing_requests(stable, canary)
    if missing:
        return Check(metric, None, margin, "inconclusive", missing)
    stable_n, canary_n = _count(stable.requests), _count(canary.requests)
    enough = min(stable_n, canary_n) >= t.min_samples
    ratio, which = _latency_ratio(stable, canary, min(stable_n, canary_n) >= t.min_latency_quantile_samples)
    if ratio is None:
        return Check(metric, None, margin, "inconclusive", f"no latency {which} to compare: {_no_quantiles()}")
    observed = f"canary/stable {which} latency ratio {ratio:.2f}"
    binned = _binned(_latency_buckets(stable), _latency_buckets(canary))
    if binned is None:
        # No histograms, no rank test: the quantile ratio alone (it spends no alpha), with the sample rules.
        if not enough:
            return Check(metric, ratio, margin, "inconclusive", _too_few(observed, "requests", t.min_samples))
        verdict: Verdict = "fail" if ratio > margin else "pass"
        word = "above" if ratio > margin else "within"
        return Check(metric, ratio, margin, verdict, f"{observed} is {word} the {margin:g} tolerated (no histograms)")
    _, stable_counts, canary_counts = binned
    pvalue = mann_whitney_greater(canary_counts, stable_counts)
    test = f"Mann-Whitney p={_p(pvalue)}, alpha {_p(alpha)}"
    return _three_zones(
        metric, ratio, margin, pvalue, alpha, enough, observed, test, f"{margin:g} tolerated", _needed(t, "requests")
    )


def _latency_ratio(stable: WindowMetrics, canary: WindowMetrics, tails: bool) -> tuple[float | None, str]:
    """The canary/stable ratio of medians or, with enough samples for p99s, the larger of that and the p99s' ratio."""
    ratios = [("median", _ratio(canary.latency.p50, stable.latency.p50))]
    if tails:
        ratios.append(("p99", _ratio(canary.latency.p99, stable.latency.p99)))
    known = [(value, name) for name, value in ratios if value is not None]
    if not known:
        return None, "median"
    value, name = max(known)
    return value, name


def _scores(stable: WindowMetrics, canary: WindowMetrics, t: Thresholds, alpha: float) -> list[Check]:
    from scipy import special

    for side, metrics in (("stable", stable), ("canary", canary)):
        if _count(metrics.scores.count) == 0:
            reason = f"the {side} model returned no scores in the window"
            return [Check("score_psi", None, t.max_psi, "inconclusive", reason), _ks_missing(t, reason)]
    binned = _binned(_cumulative(stable.scores.buckets), _cumulative(canary.scores.buckets))
    if binned is None:
        reason = "the two models' score histograms share no bucket bounds to compare"
        return [Check("score_psi", None, t.max_psi, "inconclusive", reason), _ks_missing(t, reason)]
    _, stable_counts, canary_counts = binned
    stable_n, canary_n = sum(stable_counts), sum(canary_counts)
    enough = min(stable_n, canary_n) >= t.min_samples
    sizes = f"{canary_n} canary and {stable_n} stable scores"
    # Both statistics are computed on the buckets; their noise shrinks with n_eff = n1 n2 / (n1 + n2).
    n_eff = stable_n * canary_n / (stable_n + canary_n)

    psi = population_stability_index(stable_counts, canary_counts)
    # PSI is biased upward on small samples, by about (occupied buckets - 1) / n_eff and more where a bucket is
    # empty on one side: identical models over the 21 score buckets show PSI near 1 at 50 scores a side, 0.2 at
    # 200, 0.035 at 1000. So PSI alone would fail good canaries; it fails only when a test says the distributions
    # differ, and until the samples outgrow the bias a good canary's PSI check is inconclusive, never a pass.
    # PSI has no p-value of its own: n_eff * PSI tends to a chi-square, but buckets that hold a few scores (a score
    # distribution's tails) and the epsilon make that approximation fire far too often below a few thousand scores.
    # Its significance is Pearson's chi-square test that both sides come from one distribution, over the same
    # buckets with sparse ones merged (Cochran's rule: at least 5 expected a side), which holds its level.
    psi_p = homogeneity_pvalue(stable_counts, canary_counts)
    psi_check = _three_zones(
        "score_psi",
        psi,
        t.max_psi,
        psi_p,
        alpha,
        enough,
        f"score PSI {psi:.3f} over {sizes}",
        f"chi-square p={_p(psi_p)}, alpha {_p(alpha)}",
        f"{t.max_psi:g} tolerated",
        _needed(t, "scores"),
    )

    distance = ks_distance(stable_counts, canary_counts)
    # Kolmogorov's limiting distribution of sqrt(n_eff) * D (scipy.stats.kstwobign): conservative at small samples
    # and on binned scores (ties), and a ufunc, ten times faster than the finite-n kstwo at no loss that matters here.
    ks_p = float(special.kolmogorov(math.sqrt(n_eff) * distance))
    ks_check = _three_zones(
        "score_ks",
        distance,
        t.max_ks,
        ks_p,
        alpha,
        enough,
        f"score KS distance {distance:.3f} over {sizes}",
        f"KS p={_p(ks_p)}, alpha {_p(alpha)}",
        f"{t.max_ks:g} tolerated",
        _needed(t, "scores"),
    )
    return [psi_check, ks_check]


def _ks_missing(t: Thresholds, reason: str) -> Check:
    return Check("score_ks", None, t.max_ks, "inconclusive", reason)


def paired(pairs: PairSample, t: Thresholds, alpha: float) -> list[Check]:
    """The shadow step's checks on the paired scores (the stable and the canary score of the same row):
    `shadow_agreement`, the share of rows the two put on different sides of `decision_threshold`, against
    `max_disagreement` (one-sided exact binomial test); `shadow_score_diff`, the mean absolute difference of the two
    scores, against `max_score_diff` (one-sided t-test on the absolute differences). Both need `min_samples` pairs."""
    from scipy import stats

    n, enough, needed = pairs.count, pairs.count >= t.min_samples, f"{t.min_samples} pairs"
    if n == 0:
        why = "no paired predictions yet (the canary answers nginx's mirror copies): keep baking"
        return [
            Check("shadow_agreement", None, t.max_disagreement, "inconclusive", why),
            Check("shadow_score_diff", None, t.max_score_diff, "inconclusive", why),
        ]
    cut = t.decision_threshold
    flips = sum((a >= cut) != (b >= cut) for a, b in zip(pairs.stable, pairs.canary, strict=True))
    share = flips / n
    agreement = _three_zones(
        "shadow_agreement", share, t.max_disagreement, float(stats.binomtest(flips, n, t.max_disagreement,
        alternative="greater").pvalue), alpha, enough,
        f"the models disagree on {flips} of {n} paired rows ({share:.1%}) at the threshold {cut:g}",
        "binomial test", f"tolerated disagreement of {t.max_disagreement:.1%}", needed,
    )  # fmt: skip
    gaps = [abs(a - b) for a, b in zip(pairs.stable, pairs.canary, strict=True)]
    mean = math.fsum(gaps) / n
    if n > 1 and max(gaps) - min(gaps) > 1e-9:
        pvalue = float(stats.ttest_1samp(gaps, t.max_score_diff, alternative="greater").pvalue)
    else:  # every gap the same (identical models: all 0; a constant shift): no spread to test, the mean is exact
        pvalue = 0.0 if mean > t.max_score_diff else 1.0
    difference = _three_zones(
        "shadow_score_diff", mean, t.max_score_diff, pvalue, alpha, enough,
        f"the paired scores differ by {mean:.3f} on average (largest {max(gaps):.3f}) over {n} rows",
        "t-test", f"tolerated mean difference of {t.max_score_diff:g}", needed,
    )  # fmt: skip
    return [agreement, difference]


def _three_zones(
    metric: str,
    value: float,
    threshold: float,
    pvalue: float,
    alpha: float,
    enough: bool,
    observed: str,
    test: str,
    tolerated: str,
    needed: str,
) -> Check:
    """Fail: beyond the threshold and significant. Pass: within it, with enough samples. Else keep baking."""
    if value > threshold and pvalue < alpha and enough:
        return Check(metric, value, threshold, "fail", f"{observed}: above the {tolerated} ({test})", pvalue)
    if value > threshold:
        why = "not yet significantly" if enough else f"on too few samples to tell ({needed} needed)"
        reason = f"{observed}: above the {tolerated}, {why} ({test}): keep baking"
        return Check(metric, value, threshold, "inconclusive", reason, pvalue)
    if not enough:
        reason = f"{observed}: too few samples to pass ({needed} needed): keep baking"
        return Check(metric, value, threshold, "inconclusive", reason, pvalue)
    return Check(metric, value, threshold, "pass", f"{observed}: within the {tolerated}", pvalue)


# --- statistics on histograms -----------------------------------------------------------------------------------


def mann_whitney_greater(sample_counts: list[int], other_counts: list[int]) -> float:
    """One-sided p-value of Mann-Whitney U that the first sample is stochastically greater, from counts per bucket.

    The observations of a bucket are ties: the normal approximation with the tie-corrected variance and a
    continuity correction, as scipy.stats.mannwhitneyu(method="asymptotic") computes it on the expanded samples,
    in time proportional to the buckets rather than the requests.
    """
    n1, n2 = sum(sample_counts), sum(other_counts)
    if n1 == 0 or n2 == 0:
        return 1.0
    u = 0.0
    other_below = 0
    for mine, theirs in zip(sample_counts, other_counts, strict=True):
        u += mine * (other_below + theirs / 2)
        other_below += theirs
    total = n1 + n2
    ties = sum((a + b) ** 3 - (a + b) for a, b in zip(sample_counts, other_counts, strict=True))
    variance = n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:  # every observation in one bucket: no evidence either way
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))


def homogeneity_pvalue(reference_counts: list[int], current_counts: list[int]) -> float:
    """Pearson's chi-square test that two count vectors over the same buckets come from one distribution.

    Adjacent buckets are merged until each group expects at least 5 observations on the smaller side (Cochran's
    rule, under which the chi-square approximation holds); 1.0 when that leaves fewer than two groups.
    """
    from scipy import special

    reference_n, current_n = sum(reference_counts), sum(current_counts)
    if reference_n == 0 or current_n == 0:
        return 1.0
    smaller_share = min(reference_n, current_n) / (reference_n + current_n)
    groups: list[list[int]] = []
    reference_group = current_group = 0
    for reference, current in zip(reference_counts, current_counts, strict=True):
        reference_group += reference
        current_group += current
        if (reference_group + current_group) * smaller_share >= 5:
            groups.append([reference_group, current_group])
            reference_group = current_group = 0
    if groups:  # the remainder joins the last group
        groups[-1][0] += reference_group
        groups[-1][1] += current_group
    if len(groups) < 2:
        return 1.0
    # Pearson's statistic written out: scipy.stats.chi2_contingency(correction=False) gives the same, five times slower.
    total = reference_n + current_n
    statistic = 0.0
    for reference, current in groups:
        column = reference + current
        for observed, side_n in ((reference, reference_n), (current, current_n)):
            expected = side_n * column / total
            statistic += (observed - expected) ** 2 / expected
    return float(special.chdtrc(len(groups) - 1, statistic))


def population_stability_index(reference_counts: list[int], current_counts: list[int]) -> float:
    """PSI of two count vectors over the same buckets, an empty bucket's share floored at PSI_EPSILON."""
    reference_n, current_n = max(sum(reference_counts), 1), max(sum(current_counts), 1)
    psi = 0.0
    for reference, current in zip(reference_counts, current_counts, strict=True):
        expected = max(reference / reference_n, PSI_EPSILON)
        actual = max(current / current_n, PSI_EPSILON)
        psi += (actual - expected) * math.log(actual / expected)
    return psi


def ks_distance(reference_counts: list[int], current_counts: list[int]) -> float:
    """The largest difference between the two empirical CDFs at the bucket bounds."""
    reference_n, current_n = max(sum(reference_counts), 1), max(sum(current_counts), 1)
    distance = reference_below = current_below = 0.0
    for reference, current in zip(reference_counts, current_counts, strict=True):
        reference_below += reference
        current_below += current
        distance = max(distance, abs(reference_below / reference_n - current_below / current_n))
    return distance


def _latency_buckets(metrics: WindowMetrics) -> list[tuple[float, float]]:
    """The latency histogram as (bound, cumulative count), cleaned; empty when the provider did not read it."""
    buckets: tuple[Bucket, ...] = getattr(metrics, "latency_buckets", ())
    return _cumulative(buckets)


def _cumulative(buckets: tuple[Bucket, ...] | list[Bucket]) -> list[tuple[float, float]]:
    """Sorted (bound, cumulative count), equal bounds counted once, counts lifted to never fall (as
    mlgate.metrics.bucket_quantile reads a histogram); empty unless it ends with the +Inf bucket."""
    ordered = sorted(buckets, key=lambda bucket: bucket.le)
    if not ordered or not math.isinf(ordered[-1].le):
        return []
    merged: list[tuple[float, float]] = []
    for bucket in ordered:
        if merged and merged[-1][0] == bucket.le:
            merged[-1] = (bucket.le, merged[-1][1] + bucket.count)
        else:
            merged.append((bucket.le, bucket.count))
    cumulative: list[tuple[float, float]] = []
    highest = 0.0
    for le, count in merged:
        highest = max(highest, count)
        cumulative.append((le, highest))
    return cumulative


def _binned(
    stable: list[tuple[float, float]], canary: list[tuple[float, float]]
) -> tuple[list[float], list[int], list[int]] | None:
    """Counts per bucket of both cleaned cumulative histograms over the bounds they share (a coarser histogram
    when they differ); None when either is empty or they share only +Inf."""
    stable_cumulative, canary_cumulative = dict(stable), dict(canary)
    bounds = sorted(set(stable_cumulative) & set(canary_cumulative))
    if len(bounds) < 2:
        return None
    per_side: list[list[int]] = []
    for cumulative in (stable_cumulative, canary_cumulative):
        counts: list[int] = []
        below = 0
        for bound in bounds:
            reached = max(_count(cumulative[bound]), below)
            counts.append(reached - below)
            below = reached
        per_side.append(counts)
    return bounds, per_side[0], per_side[1]


def _cumulative_at(cumulative: list[tuple[float, float]], bound: float) -> float:
    """Observations at or below `bound`, interpolated linearly within its bucket (the first starts at 0); above
    the last finite bound only that bound's count, so the +Inf bucket's requests count as slower than any budget."""
    start, below = 0.0, 0.0
    for le, count in cumulative:
        if math.isinf(le):
            return below
        if bound <= le:
            if le <= start:
                return count
            return below + (count - below) * max(bound - start, 0.0) / (le - start)
        start, below = le, count
    return below


# --- small helpers ----------------------------------------------------------------------------------------------


def _count(value: float) -> int:
    """A count as the tests need it: Prometheus' increase() extrapolates (9.6 requests), so round to whole ones."""
    if math.isnan(value) or value <= 0:
        return 0
    return round(value)


def _ratio(canary: float | None, stable: float | None) -> float | None:
    if canary is None or stable is None or stable <= 0:
        return None
    return canary / stable


def _missing_requests(stable: WindowMetrics, canary: WindowMetrics, *, answered: bool = False) -> str | None:
    """Why a comparison cannot run: a side without requests (`answered`: without requests it was asked to answer,
    every one refused as a client error)."""
    for side, metrics in (("stable", stable), ("canary", canary)):
        if _count(metrics.answered if answered else metrics.requests) == 0:
            return _no_requests(side, metrics if answered else None)
    return None


def _no_requests(side: str, metrics: WindowMetrics | None = None) -> str:
    refused = _count(metrics.client_errors) if metrics is not None else 0
    if refused:
        return f"the {side} model answered no requests in the window: all {refused} were client errors (4xx)"
    return f"the {side} model served no requests in the window"


def _refused(metrics: WindowMetrics) -> str:
    """How many requests were left out of an error rate as client errors, for its reason; empty when none."""
    refused = _count(metrics.client_errors)
    return f"; {refused} client errors (4xx) not held against it" if refused else ""


def _no_quantiles() -> str:
    return "a side's latency quantiles are unknown or zero"


def _too_few(observed: str, samples: str, needed: int) -> str:
    return f"{observed}: too few {samples} to pass ({needed} needed): keep baking"


def _needed(t: Thresholds, samples: str) -> str:
    return f"{t.min_samples} {samples} a side"


def _p(value: float) -> str:
    return f"{value:.2g}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def _points(increase: float) -> str:
    return f"{increase * 100:+.1f} points"


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a float is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = [
    "METRICS",
    "P99_SHARE",
    "PSI_EPSILON",
    "TESTS_PER_ANALYSIS",
    "Analysis",
    "Check",
    "Thresholds",
    "Verdict",
    "alpha_per_test",
    "analyse",
    "homogeneity_pvalue",
    "ks_distance",
    "mann_whitney_greater",
    "overall",
    "population_stability_index",
]
