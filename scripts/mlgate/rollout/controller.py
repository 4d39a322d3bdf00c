"""The staged canary's controller: move the weight step by step, judge each step, promote or roll back.

At each step the traffic backend gets the canary's share, both servers' metrics windows open at the same
moment, and every `interval_s` the analysis (mlgate.rollout.analysis) compares the two over the step so
far (the window grows: more samples, more power; the false-alarm budget counts every look). A step passes
once it has baked `bake_s` and its latest analysis passes; it fails at the first failing analysis, at
`max_failures` metric reads in a row that fail, or at `deadline_s` while still inconclusive.

Rollback puts 100 % on the stable model first, then records; promotion puts 100 % on the canary, then
asks the registry gate to move @champion, and returns traffic to stable if the gate refuses. The state
file (written after every analysis) is the truth another process reads: `mlgate rollout status` shows it,
`mlgate rollout abort` returns traffic to stable from it (also after the controller died), and the
controller stops at its next look when it finds itself aborted.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from mlgate.errors import InputError, MlgateError
from mlgate.metrics import MetricsError, MetricsProvider, ServerRef, WindowMetrics
from mlgate.rollout.analysis import PAIRED_METRICS, TESTS_PER_ANALYSIS, Thresholds, alpha_per_test, analyse
from mlgate.rollout.pairs import PairReader, PairSample
from mlgate.statefile import alive, checked_state, locked, read_state, write_state
from mlgate.traffic import Split, TrafficBackend

RUNNING = "running"
PROMOTED = "promoted"
ROLLED_BACK = "rolled-back"
ABORTED = "aborted"
# What an abort from another process writes, and the controller takes over.
CLOSING = ("phase", "outcome", "reason", "ended_at")


class PairSource(Protocol):
    """Where a shadow step's paired predictions come from (PairReader, or the tests' fake)."""

    def start(self) -> None: ...

    def read(self) -> PairSample: ...


@dataclass(frozen=True)
class Stage:
    """One step of the plan: its name, the split it puts in force."""

    name: str
    split: Split


@dataclass(frozen=True)
class Plan:
    """The steps and their timing, the thresholds, and the per-test significance level they imply."""

    stages: tuple[Stage, ...]
    interval_s: float
    bake_s: float
    deadline_s: float
    thresholds: Thresholds
    false_alarm_budget: float
    max_failures: int
    alpha: float

    @classmethod
    def build(
        cls,
        steps: list[int],
        *,
        shadow: bool,
        interval_s: float,
        bake_s: float,
        deadline_s: float,
        thresholds: Thresholds,
        false_alarm_budget: float,
        max_failures: int,
    ) -> Plan:
        stages = [Stage("shadow", Split(100, 0, mirror=True))] if shadow else []
        stages += [Stage(f"{step}%", Split(100 - step, step)) for step in steps]
        # Bonferroni over every look a step may take (its deadline over the interval), every step and every test
        # (the shadow step's two paired checks counted for every step: a little conservative, one alpha for all).
        looks = max(1, math.ceil(deadline_s / interval_s))
        tests = TESTS_PER_ANALYSIS + (len(PAIRED_METRICS) if shadow else 0)
        alpha = alpha_per_test(false_alarm_budget, len(stages), looks, tests)
        return cls(tuple(stages), interval_s, bake_s, deadline_s, thresholds, false_alarm_budget, max_failures, alpha)

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": [{"name": stage.name, **stage.split.to_json()} for stage in self.stages],
            "interval_s": self.interval_s,
            "bake_s": self.bake_s,
            "deadline_s": self.deadline_s,
            "false_alarm_budget": self.false_alarm_budget,
            "alpha_per_test": self.alpha,
            "max_failures": self.max_failures,
            "thresholds": self.thresholds.model_dump(),
        }


class _Read(BaseModel):
    # What mlgate wrote, read back as strictly as mlgate.yaml: no "12" for a number, no number for a string.
    # Keys of its own that a reader does not use pass (a newer mlgate's, a record's extras).
    model_config = ConfigDict(strict=True, extra="allow")


class _Server(_Read):
    model: str | None = None
    version: str | None = None
    url: str | None = None


class _StepNow(_Read):
    index: int | None = None
    name: str | None = None
    canary: int | None = None


class _Window(_Read):
    requests: float | None = None
    error_rate: float | None = None
    p99_s: float | None = None


class _Analysis(_Read):
    at: float | None = None
    canary: _Window | None = None
    stable: _Window | None = None


class _Step(_Read):
    name: str
    canary: int | None = None
    verdict: str | None = None
    reason: str | None = None
    analyses: list[_Analysis] = []


class _PlanStep(_Read):
    name: str


class _Plan(_Read):
    steps: list[_PlanStep] = []
    false_alarm_budget: float | None = None
    alpha_per_test: float | None = None


class RolloutRecord(_Read):
    """The state file's shape (the controller's record): which rollout, whose controller, where it stands."""

    id: str
    phase: Literal["running", "promoted", "rolled-back", "aborted"]
    pid: int
    host: str
    model: str | None = None
    canary: _Server
    stable: _Server | None = None
    plan: _Plan | None = None
    started_at: float | None = None
    ended_at: float | None = None
    steps: list[_Step] = []
    step: _StepNow | None = None
    outcome: str | None = None
    reason: str | None = None
    audit_run_id: str | None = None


class RolloutState:
    """The state file of the rollouts of one project (`rollout.state_dir`/state.json) and their lock."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "state.json"

    @property
    def fix(self) -> str:
        # `mlgate rollout abort` reads this file too: the way back to stable that needs nothing of it.
        return (
            "the file was edited or is not mlgate's, and no mlgate rollout command can trust it: if a rollout may "
            "still be running, put every request on the stable model (`mlgate traffic set --canary 0`), then "
            f"delete {self.path} and start the rollout again"
        )

    def read(self) -> dict[str, Any] | None:
        data = read_state(self.path, fix=self.fix)
        return None if data is None else checked_state(self.path, data, RolloutRecord, self.fix)

    def write(self, data: dict[str, Any]) -> None:
        write_state(self.path, data)

    def record_path(self, rollout_id: str) -> Path:
        return self.folder / f"decision-{rollout_id}.json"


def describe_running(state: dict[str, Any]) -> str:
    canary = state.get("canary") or {}
    step = state.get("step") or {}
    return (
        f"rollout {state.get('id')} of {canary.get('model')} version {canary.get('version')}, "
        f"step {step.get('name', '?')}, controller pid {state.get('pid')} on {state.get('host')}"
    )


def controller_alive(state: dict[str, Any]) -> bool:
    """Whether the controller that wrote `state` still runs (only knowable on its own host)."""
    if state.get("host") != socket.gethostname():
        return True  # another machine's: assume it runs, so two controllers never drive one router
    pid = int(state.get("pid") or 0)
    return pid > 0 and alive(pid)


def refuse_if_running(state: dict[str, Any] | None, where: Path) -> None:
    if state is None or state.get("phase") != RUNNING:
        return
    if controller_alive(state):
        raise InputError(
            f"a rollout is already running: {describe_running(state)}",
            hint=f"wait for it to end, or stop it with `mlgate rollout abort` (state: {where})",
        )
    raise InputError(
        f"an earlier rollout was interrupted and never finished: {describe_running(state)} is no longer running",
        hint="run `mlgate rollout abort`: it puts every request back on the stable model and closes the record",
    )


def window_json(metrics: WindowMetrics) -> dict[str, Any]:
    return {
        "requests": metrics.requests,
        "errors": metrics.errors,
        "server_errors": metrics.server_errors,
        "client_errors": metrics.client_errors,
        "error_rate": metrics.error_rate,  # the model's own: 5xx over the requests less the 4xx
        "p50_s": metrics.latency.p50,
        "p99_s": metrics.latency.p99,
        "scores": metrics.scores.count,
        "mean_score": metrics.scores.mean,
        "window_s": metrics.window_s,
        "restarted": metrics.restarted,
    }


@dataclass
class Controller:
    """Drives one rollout of `canary` against `stable` through `plan` on `backend`, reading `provider`.

    `promote` moves @champion through the registry gate and returns (moved, why); `finish` records the
    decision (registry audit, artifacts) and gets the record. `sleep` and `clock` are for the tests.
    """

    plan: Plan
    backend: TrafficBackend
    provider: MetricsProvider
    stable: ServerRef
    canary: ServerRef
    state: RolloutState
    model: str
    promote: Callable[[], tuple[bool, str]]
    finish: Callable[[dict[str, Any]], None] = lambda record: None
    say: Callable[[str], None] = print
    # A shadow step's reader of the paired predictions (None: from the two servers' URLs, mlgate.rollout.pairs).
    pairs: Callable[[], PairSource] | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    record: dict[str, Any] = field(default_factory=dict)

    def start(self) -> dict[str, Any]:
        """Run the rollout to its decision; the decision record (also in the state file)."""
        with locked(self.state.folder):
            refuse_if_running(self.state.read(), self.state.path)
            self.record = {
                "id": uuid.uuid4().hex[:12],
                "model": self.model,
                "phase": RUNNING,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "stable": {"model": self.stable.model, "version": self.stable.version, "url": self.stable.url},
                "canary": {"model": self.canary.model, "version": self.canary.version, "url": self.canary.url},
                "plan": self.plan.to_json(),
                "started_at": self.wall(),
                "steps": [],
                "step": None,
                "outcome": None,
                "reason": None,
            }
            self.state.write(self.record)
        try:
            return self._run()
        except BaseException as exc:  # cancelled (SIGTERM, Ctrl-C) or broken: every request back on stable
            if self.record.get("phase") == RUNNING:
                why = "cancelled" if isinstance(exc, KeyboardInterrupt | SystemExit) else f"failed: {exc}"
                self._roll_back(f"the controller was {why}", outcome=ABORTED)
            raise

    # -- the steps --------------------------------------------------------------------------------------------
    def _run(self) -> dict[str, Any]:
        for index, stage in enumerate(self.plan.stages):
            failed = self._step(index, stage)
            if failed is not None:
                return self._roll_back(failed)
            if self._aborted():  # traffic is on stable already (the abort did it): record the decision
                self.finish(self.record)
                self._save()
                return self.record
        return self._promote()

    def _step(self, index: int, stage: Stage) -> str | None:
        """Bake one step; None when it passed, else why it failed (or None when aborted meanwhile)."""
        applied = self.backend.apply(stage.split)
        self.say(f"mlgate rollout: step {stage.name}: {applied.split.describe()}")
        step: dict[str, Any] = {
            "index": index,
            "name": stage.name,
            **stage.split.to_json(),
            "started_at": self.wall(),
            "analyses": [],
            "verdict": None,
        }
        self.record["steps"].append(step)
        self.record["step"] = {"index": index, "name": stage.name, "canary": stage.split.canary}
        started = self.clock()
        failures, last_error = 0, ""
        reader = self._pair_source() if stage.split.mirror else None
        try:
            for server in (self.stable, self.canary):
                self.provider.start(server)
            if reader is not None:
                reader.start()
        except MetricsError as exc:
            failures, last_error = 1, exc.message
        while True:
            self.sleep(self.plan.interval_s)
            if self._aborted():
                step["verdict"] = ABORTED
                return None
            elapsed = self.clock() - started
            try:
                stable = self.provider.read(self.stable, elapsed, advance=False)
                canary = self.provider.read(self.canary, elapsed, advance=False)
                paired = reader.read() if reader is not None else None
            except MetricsError as exc:
                failures, last_error = failures + 1, exc.message
                step["analyses"].append({"at": self.wall(), "elapsed_s": elapsed, "error": exc.message})
                self._save()
                if failures >= self.plan.max_failures:
                    return self._fail_step(step, f"the metrics could not be read {failures} times in a row: {exc}")
                if elapsed >= self.plan.deadline_s:
                    return self._fail_step(step, f"no metrics by the step's deadline: {last_error}")
                continue
            failures = 0
            # At 100 % the stable model serves nothing to compare with: the hard guards judge that step alone.
            compare = stage.split.stable > 0 or stage.split.mirror
            analysis = analyse(stable, canary, self.plan.thresholds, self.plan.alpha, compare=compare, pairs=paired)
            entry = {
                "at": self.wall(),
                "elapsed_s": round(elapsed, 3),
                "verdict": analysis.verdict,
                "stable": window_json(stable),
                "canary": window_json(canary),
                **({"pairs": paired.to_json()} if paired is not None else {}),
                "checks": [check.to_json() for check in analysis.checks],
            }
            step["analyses"].append(entry)
            self._save()
            failing = [check for check in analysis.checks if check.verdict == "fail"]
            if failing:
                return self._fail_step(step, "; ".join(check.reason for check in failing))
            if analysis.verdict == "pass" and elapsed >= self.plan.bake_s:
                step["verdict"] = "pass"
                step["ended_at"] = self.wall()
                self._save()
                self.say(f"mlgate rollout: step {stage.name} passed after {elapsed:.0f}s")
                return None
            if elapsed >= self.plan.deadline_s:
                waiting = [check.reason for check in analysis.checks if check.verdict == "inconclusive"]
                return self._fail_step(
                    step,
                    f"still inconclusive at the step's deadline ({self.plan.deadline_s:g}s): "
                    + ("; ".join(waiting) or "too few samples"),
                )

    def _pair_source(self) -> PairSource:
        if self.pairs is not None:
            return self.pairs()
        if not (self.stable.url and self.canary.url):
            raise InputError(
                "a shadow step pairs the two servers' predictions and needs their URLs",
                hint="use the nginx traffic stack (mlgate traffic up, or --serve), or set rollout.shadow: false",
            )
        return PairReader(self.stable.url, self.canary.url)

    def _fail_step(self, step: dict[str, Any], reason: str) -> str:
        step["verdict"] = "fail"
        step["ended_at"] = self.wall()
        step["reason"] = reason
        return f"step {step['name']}: {reason}"

    # -- the decisions ----------------------------------------------------------------------------------------
    def _roll_back(self, reason: str, outcome: str = ROLLED_BACK) -> dict[str, Any]:
        applied = self.backend.apply(Split(100, 0))  # traffic first: the record can wait, the users cannot
        self.say(f"mlgate rollout: rolled back, {applied.split.describe()}: {reason}")
        return self._close(outcome, reason)

    def _promote(self) -> dict[str, Any]:
        self.backend.apply(Split(0, 100))
        try:
            moved, why = self.promote()
        except MlgateError as exc:
            moved, why = False, f"the registry gate failed: {exc.message}"
        if not moved:
            return self._roll_back(f"every step passed, but the registry did not promote: {why}")
        self.say(f"mlgate rollout: promoted version {self.canary.version}: {why}")
        return self._close(PROMOTED, why)

    def _close(self, outcome: str, reason: str) -> dict[str, Any]:
        self.record |= {"phase": outcome, "outcome": outcome, "reason": reason, "ended_at": self.wall()}
        self._save()
        self.finish(self.record)
        self._save()
        return self.record

    def _save(self) -> None:
        with locked(self.state.folder):
            current = self.state.read()
            if current is not None and current.get("id") == self.record["id"] and current.get("phase") == ABORTED:
                self.record |= {
                    key: current[key] for key in ("phase", "outcome", "reason", "ended_at") if key in current
                }
            self.state.write(self.record)

    def _aborted(self) -> bool:
        current = self.state.read()
        if current is None or current.get("id") != self.record["id"] or current.get("phase") != ABORTED:
            return False
        self.record |= {key: current[key] for key in CLOSING if key in current}
        self.say(f"mlgate rollout: aborted from outside: {current.get('reason')}")
        return True


def abort(state: RolloutState, backend: TrafficBackend, reason: str, wall: Callable[[], float] = time.time) -> str:
    """Every request back on the stable model and the running rollout (live or dead) closed as aborted; what
    was done. With no rollout running the stable split is still put in force."""
    applied = backend.apply(Split(100, 0))
    with locked(state.folder):
        current = state.read()
        if current is None or current.get("phase") != RUNNING:
            return f"no rollout is running; traffic: {applied.split.describe()}"
        dead = not controller_alive(current)
        why = reason + (" (its controller had stopped: recovered from the state file)" if dead else "")
        current |= {"phase": ABORTED, "outcome": ABORTED, "reason": why, "ended_at": wall()}
        state.write(current)
    return f"aborted {describe_running(current)}; traffic: {applied.split.describe()}"
