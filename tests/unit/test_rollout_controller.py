"""The rollout controller's decisions on a recording traffic backend and scripted metrics, with a fake clock:
promotion through every step, rollback at the first failing analysis, traffic back on stable before any record,
inconclusive until the deadline, metrics that stop answering, a registry that refuses, an abort from outside,
a cancelled controller, and a second rollout refused while one runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlgate.errors import InputError, ToolError
from mlgate.metrics import Bucket, MetricsError, Quantiles, Scores, ServerRef, WindowMetrics
from mlgate.rollout.analysis import Thresholds
from mlgate.rollout.controller import ABORTED, PROMOTED, ROLLED_BACK, Controller, Plan, RolloutState, abort
from mlgate.rollout.pairs import PairSample
from mlgate.traffic import Applied, Split

STABLE = ServerRef("fraud", "1", "http://127.0.0.1:1")
CANARY = ServerRef("fraud", "2", "http://127.0.0.1:2")
INF = float("inf")
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, INF)
SCORES = tuple(round(step * 0.05, 2) for step in range(21))


def window(server: ServerRef, requests: int, errors: int = 0, slow: bool = False, shift: int = 0) -> WindowMetrics:
    """`requests` answered in 5-10 ms (50-100 ms when slow), scores spread evenly over 0..1 (`shift` buckets up)."""
    done_by = 0.1 if slow else 0.01
    latency = tuple(Bucket(le, requests if le >= done_by else 0) for le in LATENCY)
    ok = requests - errors
    scores = tuple(Bucket(le, ok * max(index - shift, 0) / 20) for index, le in enumerate(SCORES))
    p50 = 0.075 if slow else 0.0075
    return WindowMetrics(
        server=server,
        provider="scripted",
        window_s=1.0,
        requests=requests,
        errors=errors,
        server_errors=errors,
        error_rate=errors / requests if requests else None,
        latency=Quantiles(p50, p50 * 1.3, p50 * 1.33) if requests else Quantiles(None, None, None),
        scores=Scores(ok, 0.5 if ok else None, (*scores, Bucket(INF, ok))),
        restarted=False,
        latency_buckets=latency,
    )


@dataclass
class Backend:
    """Records every split applied, and what the state held when it was (to see traffic moved before records)."""

    state: RolloutState
    name: str = "recording"
    applied: list[Split] = field(default_factory=list)
    phases: list[str | None] = field(default_factory=list)

    def apply(self, split: Split) -> Applied:
        current = self.state.read()
        self.phases.append(None if current is None else current.get("phase"))
        self.applied.append(split)
        return Applied(split, True, "recorded")

    def current(self) -> Split | None:
        return self.applied[-1] if self.applied else None


class Provider:
    """Scripted reads: `script(step_canary_percent, look)` -> (stable, canary) windows, or raises MetricsError."""

    name = "scripted"

    def __init__(self, backend: Backend, script: Any) -> None:
        self.backend = backend
        self.script = script
        self.looks: dict[int, int] = {}
        self.pending: list[WindowMetrics] = []

    def start(self, server: ServerRef) -> None:
        return None

    def read(self, server: ServerRef, window_s: float, *, advance: bool = True) -> WindowMetrics:
        assert advance is False  # the controller's windows grow from the step's start
        if server is STABLE:
            percent = self.backend.applied[-1].canary
            look = self.looks[percent] = self.looks.get(percent, 0) + 1
            self.pending = list(self.script(percent, look))
        return self.pending[0 if server is STABLE else 1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def plan(steps: list[int] | None = None, **overrides: Any) -> Plan:
    settings: dict[str, Any] = {
        "shadow": False,
        "interval_s": 1.0,
        "bake_s": 3.0,
        "deadline_s": 10.0,
        "thresholds": Thresholds(min_samples=50),
        "false_alarm_budget": 0.01,
        "max_failures": 3,
    } | overrides
    return Plan.build(steps or [10, 50, 100], **settings)


def controller(tmp_path: Path, script: Any, promote: Any = None, **plan_overrides: Any) -> tuple[Controller, Backend]:
    state = RolloutState(tmp_path / "rollout")
    backend = Backend(state)
    clock = Clock()
    finished: list[dict[str, Any]] = []
    found = Controller(
        plan=plan(**plan_overrides),
        backend=backend,
        provider=Provider(backend, script),
        stable=STABLE,
        canary=CANARY,
        state=state,
        model="fraud",
        promote=promote or (lambda: (True, "roc_auc beats the champion's")),
        finish=finished.append,
        say=lambda line: None,
        sleep=clock.sleep,
        clock=clock,
        wall=clock,
    )
    return found, backend


def good(percent: int, look: int) -> tuple[WindowMetrics, WindowMetrics]:
    canary = 2 * percent * look  # grows with the weight and the window
    return window(STABLE, 400 * look), window(CANARY, canary)


def test_a_good_canary_is_promoted_through_every_step(tmp_path: Path) -> None:
    rollout, backend = controller(tmp_path, good)
    record = rollout.start()
    assert record["outcome"] == PROMOTED
    assert [split.canary for split in backend.applied] == [10, 50, 100, 100]  # the steps, then 100 % to promote
    assert [step["verdict"] for step in record["steps"]] == ["pass", "pass", "pass"]
    assert all(len(step["analyses"]) >= 3 for step in record["steps"])  # each baked bake_s before passing
    assert RolloutState(tmp_path / "rollout").read()["phase"] == PROMOTED  # type: ignore[index]


def test_an_erroring_canary_is_rolled_back_at_the_first_step_traffic_first(tmp_path: Path) -> None:
    def erroring(percent: int, look: int) -> tuple[WindowMetrics, WindowMetrics]:
        return window(STABLE, 400 * look), window(CANARY, 40 * look, errors=12 * look)

    rollout, backend = controller(tmp_path, erroring)
    record = rollout.start()
    assert record["outcome"] == ROLLED_BACK
    assert backend.applied[-1] == Split(100, 0)
    assert backend.phases[-1] == "running"  # traffic was back on stable before the record was closed
    assert len(record["steps"]) == 1 and record["steps"][0]["verdict"] == "fail"
    assert record["reason"].startswith("step 10%: ") and "error rate" in record["reason"]


def test_too_few_samples_keep_baking_and_fail_at_the_deadline(tmp_path: Path) -> None:
    def starved(percent: int, look: int) -> tuple[WindowMetrics, WindowMetrics]:
        return window(STABLE, 400 * look), window(CANARY, 2)

    rollout, backend = controller(tmp_path, starved)
    record = rollout.start()
    step = record["steps"][0]
    assert record["outcome"] == ROLLED_BACK and backend.applied[-1] == Split(100, 0)
    assert {analysis["verdict"] for analysis in step["analyses"]} == {"inconclusive"}  # never a silent pass
    assert len(step["analyses"]) == 10  # every look until the 10 s deadline
    assert "still inconclusive at the step's deadline (10s)" in record["reason"]


def test_metrics_that_stop_answering_fail_the_step_after_max_failures(tmp_path: Path) -> None:
    def vanishing(percent: int, look: int) -> tuple[WindowMetrics, WindowMetrics]:
        if percent == 50:
            raise MetricsError("metrics endpoint http://127.0.0.1:2/metrics is not reachable: connection refused")
        return good(percent, look)

    rollout, backend = controller(tmp_path, vanishing)
    record = rollout.start()
    assert record["outcome"] == ROLLED_BACK and backend.applied[-1] == Split(100, 0)
    assert [step["verdict"] for step in record["steps"]] == ["pass", "fail"]
    assert "could not be read 3 times in a row" in record["reason"] and "127.0.0.1:2/metrics" in record["reason"]


def test_a_registry_that_refuses_the_promotion_sends_traffic_back_to_stable(tmp_path: Path) -> None:
    rollout, backend = controller(tmp_path, good, promote=lambda: (False, "the evidence is stale"))
    record = rollout.start()
    assert record["outcome"] == ROLLED_BACK
    assert [split.canary for split in backend.applied][-2:] == [100, 0]
    assert "every step passed, but the registry did not promote: the evidence is stale" in record["reason"]


def test_a_cancelled_controller_puts_traffic_back_on_stable(tmp_path: Path) -> None:
    def interrupted(percent: int, look: int) -> tuple[WindowMetrics, WindowMetrics]:
        if percent == 50:
            raise KeyboardInterrupt  # the job was cancelled (SIGINT) mid-step
        return good(percent, look)

    rollout, backend = controller(tmp_path, interrupted)
    with pytest.raises(KeyboardInterrupt):
        rollout.start()
    assert backend.applied[-1] == Split(100, 0)
    state = RolloutState(tmp_path / "rollout").read()
    assert state is not None and state["phase"] == ABORTED and "cancelled" in state["reason"]


def test_an_abort_from_outside_stops_the_controller_at_its_next_look(tmp_path: Path) -> None:
    state = RolloutState(tmp_path / "rollout")
    holder: dict[str, Any] = {}

    def aborted_midway(percent: int, look: int) -> tuple[WindowMetrics, WindowMetrics]:
        if percent == 50 and look == 2:
            holder["done"] = abort(state, holder["backend"], "aborted by alice")
        return good(percent, look)

    rollout, backend = controller(tmp_path, aborted_midway)
    holder["backend"] = backend
    record = rollout.start()
    assert record["outcome"] == ABORTED and record["reason"] == "aborted by alice"
    assert backend.applied[-1] == Split(100, 0)  # the abort's, and no step after it
    assert [split.canary for split in backend.applied] == [10, 50, 0]
    assert holder["done"].startswith("aborted rollout ") and "stable 100% / canary 0%" in holder["done"]


def test_a_second_rollout_is_refused_naming_the_first_and_a_dead_one_must_be_aborted(tmp_path: Path) -> None:
    state = RolloutState(tmp_path / "rollout")
    state.write({"id": "abc123", "phase": "running", "pid": os.getpid(), "host": os.uname().nodename,
                 "canary": {"model": "fraud", "version": "7"}, "step": {"name": "5%"}})  # fmt: skip
    rollout, backend = controller(tmp_path, good)
    with pytest.raises(InputError, match=r"already running: rollout abc123 of fraud version 7, step 5%") as refused:
        rollout.start()
    assert "mlgate rollout abort" in (refused.value.hint or "")
    assert backend.applied == []  # nothing moved
    state.write({**(state.read() or {}), "pid": 2**22 + 12345})  # a controller that is gone
    with pytest.raises(InputError, match="interrupted and never finished"):
        rollout.start()
    done = abort(state, backend, "aborted by hand")
    assert "its controller had stopped: recovered from the state file" in (state.read() or {})["reason"]
    assert backend.applied == [Split(100, 0)] and done.startswith("aborted rollout abc123")


def test_a_backend_that_fails_to_apply_a_step_rolls_back(tmp_path: Path) -> None:
    class Failing(Backend):
        def apply(self, split: Split) -> Applied:
            if split.canary == 50:
                raise ToolError("nginx -t refused the new config")
            return super().apply(split)

    state = RolloutState(tmp_path / "rollout")
    rollout, _ = controller(tmp_path, good)
    failing = Failing(state)
    rollout.backend = failing
    rollout.provider = Provider(failing, good)
    with pytest.raises(ToolError):
        rollout.start()
    assert failing.applied[-1] == Split(100, 0)
    assert (state.read() or {})["phase"] == ABORTED


def test_the_budget_is_spread_over_every_step_look_and_test() -> None:
    built = plan([1, 5, 25, 100], interval_s=60.0, bake_s=300.0, deadline_s=1800.0)
    assert [stage.name for stage in built.stages] == ["1%", "5%", "25%", "100%"]
    assert built.alpha == pytest.approx(0.01 / (4 * 30 * 6))
    shadow = plan([50, 100], shadow=True)
    assert shadow.alpha == pytest.approx(0.01 / (3 * 10 * 8))  # the shadow step's two paired checks counted
    assert shadow.stages[0].name == "shadow" and shadow.stages[0].split == Split(100, 0, mirror=True)


@pytest.mark.parametrize(
    ("harm", "named"),
    [({"slow": True}, "latency_vs_stable"), ({"shift": 6}, "score_")],
)
def test_a_slow_or_shifted_canary_is_rolled_back_naming_the_metric(
    tmp_path: Path, harm: dict[str, Any], named: str
) -> None:
    def harmful(percent: int, look: int) -> tuple[WindowMetrics, WindowMetrics]:
        return window(STABLE, 400 * look), window(CANARY, 40 * look, **harm)

    rollout, backend = controller(tmp_path, harmful)
    record = rollout.start()
    assert record["outcome"] == ROLLED_BACK and backend.applied[-1] == Split(100, 0)
    assert len(record["steps"]) == 1
    failed = [c["metric"] for c in record["steps"][0]["analyses"][-1]["checks"] if c["verdict"] == "fail"]
    assert any(metric.startswith(named) for metric in failed), failed


@dataclass
class Pairs:
    """A shadow step's paired scores, growing with each read: the canary's = the stable's + `shift`."""

    shift: float
    starts: int = 0
    reads: int = 0

    def start(self) -> None:
        self.starts += 1
        self.reads = 0

    def read(self) -> PairSample:
        self.reads += 1
        stable = [(index % 20) / 20 for index in range(40 * self.reads)]
        return PairSample(stable, [min(1.0, score + self.shift) for score in stable])


def mirrored(percent: int, look: int) -> tuple[WindowMetrics, WindowMetrics]:
    """In the shadow step the canary answers a copy of every request the stable model answers."""
    return (window(STABLE, 400 * look), window(CANARY, 400 * look)) if percent == 0 else good(percent, look)


def test_a_shadow_step_with_paired_scores_alike_passes_then_the_steps_follow(tmp_path: Path) -> None:
    pairs = Pairs(shift=0.0)
    rollout, backend = controller(tmp_path, mirrored, shadow=True)
    rollout.pairs = lambda: pairs
    record = rollout.start()
    assert record["outcome"] == PROMOTED, record["reason"]
    assert backend.applied[0] == Split(100, 0, mirror=True) and pairs.starts == 1  # read in the shadow step only
    shadow = record["steps"][0]
    assert shadow["name"] == "shadow" and shadow["verdict"] == "pass"
    last = shadow["analyses"][-1]
    assert last["pairs"]["pairs"] >= 50
    assert {c["metric"]: c["verdict"] for c in last["checks"]}["shadow_score_diff"] == "pass"
    assert "pairs" not in record["steps"][1]["analyses"][-1]


def test_a_shadow_step_whose_paired_scores_differ_rolls_back_before_any_client_meets_the_canary(
    tmp_path: Path,
) -> None:
    rollout, backend = controller(tmp_path, mirrored, shadow=True)
    rollout.pairs = lambda: Pairs(shift=0.3)
    record = rollout.start()
    assert record["outcome"] == ROLLED_BACK
    assert backend.applied == [Split(100, 0, mirror=True), Split(100, 0)]  # no weight ever given to the canary
    failed = [c["metric"] for c in record["steps"][0]["analyses"][-1]["checks"] if c["verdict"] == "fail"]
    assert "shadow_score_diff" in failed, failed
    assert (
        record["reason"].startswith("step shadow: ")
        and "the paired scores differ by 0.263 on average" in record["reason"]
    )
