"""The operations of `mlgate rollout`: start a staged canary of a registered version against @champion, abort one,
read where one stands. The command builds a `RolloutRequest` from its arguments and renders what these return."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlgate import gha
from mlgate.config import LoadedConfig
from mlgate.errors import InputError, MlgateError
from mlgate.metrics import ServerRef, open_provider
from mlgate.paths import outside_root
from mlgate.procio import stop_group
from mlgate.registry import CHALLENGER, Decision, Registry, open_registry
from mlgate.registry.audit import Who
from mlgate.registry.operations import judge, promote
from mlgate.rollout import leftovers
from mlgate.rollout.controller import (
    ABORTED,
    RUNNING,
    Controller,
    Plan,
    RolloutState,
    abort,
    controller_alive,
    refuse_if_running,
)
from mlgate.rollout.report import markdown
from mlgate.statefile import started_at
from mlgate.traffic import Split, backend_for
from mlgate.traffic.nginx import Layout, Proxy, prefix_folder
from mlgate.traffic.stack import down, readiness, serving_python, status, up

Say = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True, kw_only=True)
class RolloutRequest:
    """What one `mlgate rollout` call asks for, beside mlgate.yaml (`rollout`, `traffic`, `registry`)."""

    tracking_uri: str | None
    environment: str = ""  # the GitHub environment it runs in: its approvers are recorded with the promotion
    record: Path | None = None  # also write the decision record here
    version: str | None = None  # start: the version to roll out (default: @challenger)
    name: str | None = None  # the registered model (default: registry.model)
    profile: Literal["production", "test"] | None = None  # start: overrides rollout.profile
    serve: bool = False  # start: bring the local nginx stack up for the rollout, and down after
    load: str | None = None  # start: a command that sends requests while the rollout runs
    first_release: Literal["fail", "promote"] = "fail"  # start, with no @champion yet
    reason: str = "aborted by hand"  # abort: why, for the record
    stale_only: bool = False  # abort: only a rollout whose controller is gone


@dataclass(frozen=True, kw_only=True)
class StartResult:
    """How `start` ended. `how`: `first-release` (no champion: promoted or refused by the registry gate directly),
    `refused` (the promotion rule refused the version before any traffic), or `canary` (the staged rollout ran)."""

    how: Literal["first-release", "refused", "canary"]
    outcome: str
    version: str
    reason: str
    stable: str | None = None
    rollout_id: str | None = None
    record: Path | None = None

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    @property
    def decision(self) -> str:
        if self.how == "canary":
            return "promoted" if self.promoted else "rolled-back"
        return self.outcome


def state_of(loaded: LoadedConfig) -> RolloutState:
    """The rollout's state folder (rollout.state_dir), which must stay inside the project."""
    folder = loaded.root / loaded.model.rollout.state_dir
    if outside_root(loaded.root, folder):
        raise InputError(
            f"rollout.state_dir {loaded.model.rollout.state_dir!r} leaves the project",
            hint="use a folder inside the project, e.g. .mlgate/rollout (and keep .mlgate/ out of git)",
        )
    return RolloutState(folder)


def start(loaded: LoadedConfig, request: RolloutRequest, say: Say = _print) -> StartResult:
    """Run the steps of `rollout` in mlgate.yaml to promotion or rollback, after the promotion rule allowed it."""
    state = state_of(loaded)
    refuse_if_running(state.read(), state.path)  # before anything is read or moved
    assert request.tracking_uri, "start reads and moves the registry: the command requires a tracking URI"
    registry = open_registry(loaded, request.tracking_uri, request.name)
    registry.require()
    aliases = registry.aliases()
    canary = str(request.version or aliases.get(CHALLENGER) or "")
    if not canary:
        raise InputError(
            f"{registry.name} has no @{CHALLENGER} to roll out",
            hint="register a release first (mlgate registry register), or name the version: --version N",
        )
    challenger = registry.version(canary)  # exists, or an InputError naming it
    stable = aliases.get(registry.champion)
    who = Who.from_env(request.environment)
    if stable is None:
        if request.first_release != "promote":
            raise InputError(
                f"{registry.name} has no @{registry.champion}: a canary needs a stable model to compare with",
                hint=f"promote the first version directly: mlgate registry promote --version {canary} "
                "(or pass --first-release promote)",
            )
        decision = promote(loaded, registry, who, version=canary)
        return StartResult(how="first-release", outcome=decision.decision, version=canary, reason=decision.reason)
    if stable == canary:
        raise InputError(f"version {canary} is @{registry.champion} already: nothing to roll out")
    # The promotion rule first: a release it would refuse never meets production traffic.
    allowed, why, evidence = judge(loaded, challenger, stable)
    if not allowed:
        refused = Decision(
            operation="promote",
            model=registry.name,
            version=canary,
            decision="rejected",
            reason=why,
            aliases_before=aliases,
            aliases_after=aliases,
            evidence=evidence,
        )
        registry.record(refused, who)
        return StartResult(how="refused", outcome="rejected", version=canary, reason=why, stable=stable)
    with _serving(loaded, request, state.folder, registry.name, stable, canary, say):
        return _canary(loaded, request, registry, who, stable, canary, say)


@contextmanager
def _serving(
    loaded: LoadedConfig, request: RolloutRequest, folder: Path, name: str, stable: str, canary: str, say: Say
) -> Iterator[None]:
    """What runs beside the controller for this rollout: the local stack (`serve`), the load command (`load`)."""
    if request.serve:
        with _local_stack(loaded, request, folder, name, stable, canary, say) as url, _load(loaded, request, url, say):
            yield
    else:
        with _load(loaded, request, None, say):
            yield


def _canary(
    loaded: LoadedConfig, request: RolloutRequest, registry: Registry, who: Who, stable: str, canary: str, say: Say
) -> StartResult:
    settings = loaded.model.rollout
    if request.profile:
        settings = settings.model_copy(update={"profile": request.profile})
    state = state_of(loaded)
    stable_ref, canary_ref = _servers(loaded, registry.name, stable, canary)
    metrics = settings.metrics
    provider = open_provider(metrics.provider, metrics.prometheus_url, metrics.timeout_s)
    plan = Plan.build(
        settings.steps,
        shadow=settings.shadow,
        interval_s=settings.timing("interval_s"),
        bake_s=settings.timing("bake_s"),
        deadline_s=settings.timing("deadline_s"),
        thresholds=settings.thresholds,
        false_alarm_budget=settings.thresholds.false_alarm_budget,
        max_failures=metrics.max_failures,
    )
    if settings.shadow and loaded.model.traffic.backend != "nginx":
        raise InputError(
            "rollout.shadow needs the nginx traffic backend (its mirror)", hint="set rollout.shadow: false"
        )

    def promote_it() -> tuple[bool, str]:
        decision = promote(loaded, registry, who, version=canary)
        return decision.decision == "promoted", decision.reason

    controller = Controller(
        plan=plan,
        backend=backend_for(loaded.model.traffic, loaded.root),
        provider=provider,
        stable=stable_ref,
        canary=canary_ref,
        state=state,
        model=registry.name,
        promote=promote_it,
        finish=_finisher(request, registry, state),
        say=say,
    )
    steps = ", ".join(stage.name for stage in plan.stages)
    say(
        f"mlgate rollout: {registry.name} version {canary} against version {stable}: steps {steps}, "
        f"{plan.bake_s:g}s bake, {plan.interval_s:g}s interval, {plan.alpha:.2g} per test"
    )
    record = controller.start()
    return StartResult(
        how="canary", outcome=record["outcome"], version=canary, reason=record["reason"], stable=stable,
        rollout_id=record["id"], record=state.record_path(record["id"]),
    )  # fmt: skip


def _servers(loaded: LoadedConfig, model: str, stable: str, canary: str) -> tuple[ServerRef, ServerRef]:
    """The two servers the rollout reads: the nginx stack's (checked to serve these versions), or the URLs given."""
    settings = loaded.model.rollout.metrics
    traffic = loaded.model.traffic
    if traffic.backend == "command":
        if settings.provider == "scrape" and not (settings.stable_url and settings.canary_url):
            raise InputError(
                "the scrape metrics provider with traffic.backend: command needs rollout.metrics.stable_url and "
                "canary_url, the base URLs of the two model servers",
                hint="set both, or use rollout.metrics.provider: prometheus with prometheus_url",
            )
        return ServerRef(model, stable, settings.stable_url), ServerRef(model, canary, settings.canary_url)
    layout = Layout(prefix_folder(traffic.nginx.prefix, loaded.root))
    if not layout.state.exists():
        raise InputError(
            f"the canary needs both versions served, and no traffic stack is up in {layout.prefix}",
            hint="pass --serve (canary-serve: 'true' in the release workflow) to bring nginx and both versions up "
            "on this runner, start them with `mlgate traffic up`, or set traffic.backend: command to drive your "
            "router",
        )
    found = status(layout)
    refs = []
    for upstream, version in zip(found.upstreams, (stable, canary), strict=True):
        code, body = readiness(upstream.port)
        if code != 200:
            raise InputError(
                f"the {upstream.role} server of the traffic stack (port {upstream.port}) is not ready: "
                f"{upstream.detail}",
                hint="see `mlgate traffic status`; bring the stack up with both models ready before the rollout",
            )
        if (str(body.get("model")), str(body.get("version"))) != (model, version):
            raise InputError(
                f"the {upstream.role} server of the traffic stack serves {body.get('model')} version "
                f"{body.get('version')}, but the rollout needs {model} version {version} there",
                hint=f"`mlgate traffic down`, then `mlgate traffic up --stable models:/{model}/{stable} "
                f"--canary models:/{model}/{canary}`",
            )
        refs.append(ServerRef(model, version, f"http://127.0.0.1:{upstream.port}"))
    return refs[0], refs[1]


def _finisher(request: RolloutRequest, registry: Registry, state: RolloutState) -> Callable[[dict[str, Any]], None]:
    """What closes a rollout: the record on disk, in the registry's audit log and on the version, the summary."""

    def finish(record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=1, sort_keys=True, default=str) + "\n"
        state.record_path(record["id"]).write_text(text, encoding="utf-8")
        if request.record:
            request.record.parent.mkdir(parents=True, exist_ok=True)
            request.record.write_text(text, encoding="utf-8")
        aliases = registry.aliases()
        summary = {
            "rollout": record["id"],
            "outcome": record["outcome"],
            "steps": [{"name": s["name"], "verdict": s.get("verdict")} for s in record["steps"]],
        }
        decision = Decision(
            operation="rollout",
            model=registry.name,
            version=record["canary"]["version"],
            decision=record["outcome"],
            reason=record["reason"] or "",
            aliases_before=aliases,
            aliases_after=aliases,
            evidence=summary,
        )
        registry.record(decision, Who.from_env(request.environment))
        record["audit_run_id"] = decision.audit_run_id
        registry.call(
            "attaching the decision record",
            lambda: registry.client.log_text(decision.audit_run_id, text, "rollout-record.json"),
        )
        gha.add_summary(markdown(record))

    return finish


@contextmanager
def _local_stack(
    loaded: LoadedConfig, request: RolloutRequest, folder: Path, name: str, stable: str, canary: str, say: Say
) -> Iterator[str]:
    """The nginx stack for this rollout only: up with both versions, down (and its ports freed) after."""
    traffic = loaded.model.traffic
    if traffic.backend != "nginx":
        raise InputError(
            f"--serve brings up the local nginx stack, and mlgate.yaml sets traffic.backend: {traffic.backend}",
            hint="drop --serve: with the command backend your platform serves both models",
        )
    settings = traffic.nginx
    layout = Layout(prefix_folder(settings.prefix, loaded.root))
    proxy = Proxy.from_config(settings)
    found = up(
        binary=settings.binary, layout=layout, proxy=proxy,
        models={"stable": f"models:/{name}/{stable}", "canary": f"models:/{name}/{canary}"},
        split=Split(100, 0), tracking_uri=request.tracking_uri, ready_timeout_s=settings.ready_timeout_s,
        python=serving_python(loaded), max_body_bytes=loaded.model.serve.max_body_bytes,
    )  # fmt: skip
    say(f"mlgate rollout: local stack up on {found.url}")
    leftovers.note(folder, "stack", {"prefix": str(layout.prefix.resolve())})
    try:
        yield found.url
    finally:
        for line in down(layout):
            say(f"mlgate rollout: traffic down: {line}")
        leftovers.forget(folder, "stack")


@contextmanager
def _load(loaded: LoadedConfig, request: RolloutRequest, url: str | None, say: Say) -> Iterator[None]:
    """The load command running in its own process group for the rollout's duration, then stopped; its output
    goes to `load.log` in the state folder (not the job's log stream, which a generator outliving a killed
    controller would hold open) and its tail is printed when it stops."""
    command = request.load
    if not command:
        yield
        return
    folder = state_of(loaded).folder
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InputError(f"--load {command!r} does not split into words: {exc}") from None
    env = dict(os.environ)
    if url:
        env["MLGATE_TRAFFIC_URL"] = url
        # No shell runs the command: its $MLGATE_TRAFFIC_URL is filled in here.
        argv = [word.replace("${MLGATE_TRAFFIC_URL}", url).replace("$MLGATE_TRAFFIC_URL", url) for word in argv]
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / leftovers.LOAD_LOG
    try:
        with log.open("wb") as output:
            process = subprocess.Popen(
                argv, cwd=loaded.root, env=env, start_new_session=True, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
    except OSError as exc:
        raise InputError(f"the load command {argv[0]!r} cannot start: {exc.strerror}") from None
    say(f"mlgate rollout: load started (pid {process.pid}, output in {log}): {command}")
    leftovers.note(folder, "load", {"pid": process.pid, "started_at": started_at(process.pid), "log": str(log)})
    try:
        yield
    finally:
        if process.poll() is None:
            stop_group(process, grace_s=15)
        say(leftovers.load_output(log))
        leftovers.forget(folder, "load")


def abort_rollout(loaded: LoadedConfig, request: RolloutRequest) -> list[str]:
    """Every request back on the stable model and the rollout closed, also after its controller died; what it did,
    a line each. With `stale_only`, only a rollout whose controller is gone (a live one is left alone)."""
    state = state_of(loaded)
    backend = backend_for(loaded.model.traffic, loaded.root)
    running = state.read()
    if request.stale_only and not (
        running is not None and running.get("phase") == RUNNING and not controller_alive(running)
    ):
        done = ["no rollout left behind by a stopped controller; nothing to do"]
        return done + leftovers.stop_leftovers(state.folder)
    done = [abort(state, backend, request.reason)]
    if request.tracking_uri:
        done += _heal_registry(loaded, request, request.tracking_uri)
    current = state.read()
    # A controller that died leaves its record unclosed in the registry: close it from here.
    if current is not None and current.get("phase") == ABORTED and "audit_run_id" not in current:
        if not controller_alive(current) and request.tracking_uri:
            registry = open_registry(loaded, request.tracking_uri, request.name)
            _finisher(request, registry, state)(current)
            state.write(current)
    # Traffic is on stable and the record closed: now what the dead controller started beside it.
    return done + leftovers.stop_leftovers(state.folder)


def _heal_registry(loaded: LoadedConfig, request: RolloutRequest, tracking_uri: str) -> list[str]:
    """An alias move the registry gate left unfinished (its server stopped answering mid-promote), finished: an
    abort is where an operator turns after a fault. Traffic is already on stable, so a registry that cannot be
    read is a line of the report, not a failure of the abort."""
    try:
        registry = open_registry(loaded, tracking_uri, request.name)
        return registry.heal(Who.from_env(request.environment), "rollout abort")
    except MlgateError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        return [f"could not check the registry for an unfinished alias move: {exc.message}{hint}"]


@dataclass(frozen=True)
class RolloutStatus:
    """The rollout's state file (None: none has run here), where it is, and the split in force."""

    rollout: dict[str, Any] | None
    where: Path
    split: Split | None


def rollout_status(loaded: LoadedConfig) -> RolloutStatus:
    state = state_of(loaded)
    return RolloutStatus(state.read(), state.path, backend_for(loaded.model.traffic, loaded.root).current())
