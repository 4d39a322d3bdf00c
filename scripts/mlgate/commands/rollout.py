"""`mlgate rollout`: the staged canary of a registered version against @champion: start, status, abort."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate import gha
from mlgate.commands.arguments import add_config_argument, add_tracking_argument, env_default
from mlgate.config import LoadedConfig, load_config
from mlgate.errors import GateFailed, InputError

if TYPE_CHECKING:
    from mlgate.metrics import ServerRef
    from mlgate.registry import Decision, Registry
    from mlgate.registry.audit import Who
    from mlgate.rollout.controller import RolloutState
    from mlgate.traffic import TrafficBackend

OPERATIONS = ("start", "status", "abort")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "operation",
        nargs="?",
        default=env_default("operation"),
        choices=OPERATIONS,
        help="start: run the steps to promotion or rollback; status: the rollout's phase, step and split; "
        "abort: every request back on the stable model and the rollout closed (also after its controller died)",
    )
    add_config_argument(parser)
    add_tracking_argument(parser)
    parser.add_argument(
        "--version",
        default=env_default("version"),
        help="start: the registered version to roll out (default: the version @challenger points at)",
    )
    parser.add_argument("--name", default=None, help="registered model (default: registry.model of mlgate.yaml)")
    parser.add_argument(
        "--environment",
        default=env_default("environment") or "",
        help="the GitHub environment this runs in (its approvers are recorded with the promotion)",
    )
    parser.add_argument(
        "--record",
        default=env_default("record"),
        help="start/abort: also write the decision record (JSON) here, e.g. for an artifact upload",
    )
    parser.add_argument(
        "--reason", default=env_default("reason") or "aborted by hand", help="abort: why, for the record"
    )
    parser.add_argument(
        "--profile",
        choices=("production", "test"),
        default=env_default("profile"),
        help="start: the timing profile, overriding rollout.profile (test: seconds, for tests and demos)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        default=(env_default("serve") or "").lower() == "true",
        help="start: bring up the local nginx stack for the rollout (@champion stable, the version as canary) "
        "and take it down after; for CI runners and demos, where nothing else serves the models",
    )
    parser.add_argument(
        "--load",
        default=env_default("load"),
        help="start: a command that sends requests during the rollout (e.g. a headless locust run, bounded), "
        "started once the servers are up with MLGATE_TRAFFIC_URL set, and stopped at the end",
    )
    parser.add_argument(
        "--first-release",
        choices=("fail", "promote"),
        default=env_default("first-release") or "fail",
        help="start, with no @champion yet: `promote` the version through the registry gate directly (there is "
        "nothing to compare a canary with), or `fail` (default)",
    )
    parser.add_argument(
        "--stale-only",
        action="store_true",
        help="abort: only a rollout whose controller is gone (a cleanup step's guard: a live one is left alone)",
    )
    parser.add_argument("--json", action="store_true", help="status: print JSON")


def _state(loaded: LoadedConfig) -> RolloutState:
    from mlgate.paths import outside_root
    from mlgate.rollout.controller import RolloutState

    folder = loaded.root / loaded.model.rollout.state_dir
    if outside_root(loaded.root, folder):
        raise InputError(
            f"rollout.state_dir {loaded.model.rollout.state_dir!r} leaves the project",
            hint="use a folder inside the project, e.g. .mlgate/rollout (and keep .mlgate/ out of git)",
        )
    return RolloutState(folder)


def _servers(loaded: LoadedConfig, model: str, stable: str, canary: str) -> tuple[ServerRef, ServerRef]:
    """The two servers the rollout reads: the nginx stack's (checked to serve these versions), or the URLs given."""
    from mlgate.metrics import ServerRef

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
    from mlgate.traffic.nginx import Layout, prefix_folder
    from mlgate.traffic.stack import readiness, status

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


def _registry(args: argparse.Namespace) -> Registry:
    from mlgate.commands.registry import open_registry

    return open_registry(args)


def _finish(args: argparse.Namespace, loaded: LoadedConfig, registry: Registry, state: RolloutState) -> Any:
    """What closes a rollout: the record on disk, in the registry's audit log and on the version, the summary."""
    from mlgate.registry import Decision
    from mlgate.registry.audit import Who
    from mlgate.rollout.report import markdown

    def finish(record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=1, sort_keys=True, default=str) + "\n"
        state.record_path(record["id"]).write_text(text, encoding="utf-8")
        if args.record:
            Path(args.record).parent.mkdir(parents=True, exist_ok=True)
            Path(args.record).write_text(text, encoding="utf-8")
        aliases = registry.aliases()
        summary = {
            "rollout": record["id"],
            "outcome": record["outcome"],
            "steps": [{"name": s["name"], "verdict": s.get("verdict")} for s in record["steps"]],
        }
        decision = Decision(
            "rollout", registry.name, record["canary"]["version"], record["outcome"], record["reason"] or "",
            aliases, aliases, summary,
        )  # fmt: skip
        registry.record(decision, Who.from_env(args.environment))
        record["audit_run_id"] = decision.audit_run_id
        registry.call(
            "attaching the decision record",
            lambda: registry.client.log_text(decision.audit_run_id, text, "rollout-record.json"),
        )
        gha.add_summary(markdown(record))

    return finish


def _start(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    from mlgate.registry import CHALLENGER, Decision
    from mlgate.registry.audit import Who
    from mlgate.registry.operations import judge, promote
    from mlgate.rollout.controller import refuse_if_running

    state = _state(loaded)
    refuse_if_running(state.read(), state.path)  # before anything is read or moved
    registry = _registry(args)
    registry.require()
    aliases = registry.aliases()
    canary = str(args.version or aliases.get(CHALLENGER) or "")
    if not canary:
        raise InputError(
            f"{registry.name} has no @{CHALLENGER} to roll out",
            hint="register a release first (mlgate registry register), or name the version: --version N",
        )
    challenger = registry.version(canary)  # exists, or an InputError naming it
    stable = aliases.get(registry.champion)
    who = Who.from_env(args.environment)
    if stable is None:
        if args.first_release != "promote":
            raise InputError(
                f"{registry.name} has no @{registry.champion}: a canary needs a stable model to compare with",
                hint=f"promote the first version directly: mlgate registry promote --version {canary} "
                "(or pass --first-release promote)",
            )
        decision = promote(loaded, registry, who, version=canary)
        return _promoted_directly(decision, canary)
    if stable == canary:
        raise InputError(f"version {canary} is @{registry.champion} already: nothing to roll out")
    # The promotion rule first: a release it would refuse never meets production traffic.
    allowed, why, evidence = judge(loaded, challenger, stable)
    if not allowed:
        refused = Decision("promote", registry.name, canary, "rejected", why, aliases, aliases, evidence)
        registry.record(refused, who)
        gha.set_outputs({"outcome": "rejected", "decision": "rejected", "version": canary, "reason": why})
        raise GateFailed(
            f"version {canary} not promoted, so not rolled out: {why}",
            hint="traffic and the registry are unchanged; see registry.promotion in mlgate.yaml",
        )
    if args.serve:
        with (
            _local_stack(loaded, args, state.folder, registry.name, stable, canary) as url,
            _load(args.load, loaded.root, state.folder, url),
        ):
            return _canary(args, loaded, registry, who, stable, canary)
    if args.load:
        with _load(args.load, loaded.root, state.folder, None):
            return _canary(args, loaded, registry, who, stable, canary)
    return _canary(args, loaded, registry, who, stable, canary)


def _promoted_directly(decision: Decision, version: str) -> int:
    print(f"mlgate rollout: no champion yet: {decision.decision}: {decision.reason}", flush=True)
    gha.set_outputs(
        {"outcome": decision.decision, "decision": decision.decision, "version": version, "reason": decision.reason}
    )
    if decision.decision == "rejected":
        raise GateFailed(f"version {version} not promoted: {decision.reason}")
    return 0


@contextmanager
def _local_stack(
    loaded: LoadedConfig, args: argparse.Namespace, state_folder: Path, name: str, stable: str, canary: str
) -> Iterator[str]:
    """The nginx stack for this rollout only: up with both versions, down (and its ports freed) after."""
    from mlgate.rollout import leftovers
    from mlgate.traffic import Split
    from mlgate.traffic.nginx import Layout, Proxy, prefix_folder
    from mlgate.traffic.stack import down, serving_python, up

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
        split=Split(100, 0), tracking_uri=args.tracking_uri, ready_timeout_s=settings.ready_timeout_s,
        python=serving_python(loaded),
    )  # fmt: skip
    print(f"mlgate rollout: local stack up on {found.url}", flush=True)
    leftovers.note(state_folder, "stack", {"prefix": str(layout.prefix.resolve())})
    try:
        yield found.url
    finally:
        for line in down(layout):
            print(f"mlgate rollout: traffic down: {line}", flush=True)
        leftovers.forget(state_folder, "stack")


@contextmanager
def _load(command: str | None, root: Path, state_folder: Path, url: str | None) -> Iterator[None]:
    """The load command running in its own process group for the rollout's duration, then stopped; its output
    goes to `load.log` in the state folder (not the job's log stream, which a generator outliving a killed
    controller would hold open) and its tail is printed when it stops."""
    if not command:
        yield
        return
    import os
    import shlex
    import subprocess

    from mlgate.procio import stop_group
    from mlgate.rollout import leftovers
    from mlgate.statefile import started_at

    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InputError(f"--load {command!r} does not split into words: {exc}") from None
    env = dict(os.environ)
    if url:
        env["MLGATE_TRAFFIC_URL"] = url
        # No shell runs the command: its $MLGATE_TRAFFIC_URL is filled in here.
        argv = [word.replace("${MLGATE_TRAFFIC_URL}", url).replace("$MLGATE_TRAFFIC_URL", url) for word in argv]
    state_folder.mkdir(parents=True, exist_ok=True)
    log = state_folder / leftovers.LOAD_LOG
    try:
        with log.open("wb") as output:
            process = subprocess.Popen(
                argv, cwd=root, env=env, start_new_session=True, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
    except OSError as exc:
        raise InputError(f"the load command {argv[0]!r} cannot start: {exc.strerror}") from None
    print(f"mlgate rollout: load started (pid {process.pid}, output in {log}): {command}", flush=True)
    leftovers.note(state_folder, "load", {"pid": process.pid, "started_at": started_at(process.pid), "log": str(log)})
    try:
        yield
    finally:
        if process.poll() is None:
            stop_group(process, grace_s=15)
        print(leftovers.load_output(log), flush=True)
        leftovers.forget(state_folder, "load")


def _canary(
    args: argparse.Namespace, loaded: LoadedConfig, registry: Registry, who: Who, stable: str, canary: str
) -> int:
    from mlgate.metrics import open_provider
    from mlgate.registry.operations import promote
    from mlgate.rollout.analysis import Thresholds
    from mlgate.rollout.controller import Controller, Plan

    settings = loaded.model.rollout
    if args.profile:
        settings = settings.model_copy(update={"profile": args.profile})
    state = _state(loaded)
    stable_ref, canary_ref = _servers(loaded, registry.name, stable, canary)
    metrics = settings.metrics
    provider = open_provider(metrics.provider, metrics.prometheus_url, metrics.timeout_s)
    thresholds = Thresholds(**settings.thresholds.model_dump())
    plan = Plan.build(
        settings.steps,
        shadow=settings.shadow,
        interval_s=settings.timing("interval_s"),
        bake_s=settings.timing("bake_s"),
        deadline_s=settings.timing("deadline_s"),
        thresholds=thresholds,
        false_alarm_budget=settings.thresholds.false_alarm_budget,
        max_failures=metrics.max_failures,
    )
    if settings.shadow and loaded.model.traffic.backend != "nginx":
        raise InputError(
            "rollout.shadow needs the nginx traffic backend (its mirror)", hint="set rollout.shadow: false"
        )
    from mlgate.traffic import backend_for

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
        finish=_finish(args, loaded, registry, state),
        say=lambda line: print(line, flush=True),
    )
    steps = ", ".join(stage.name for stage in plan.stages)
    print(
        f"mlgate rollout: {registry.name} version {canary} against version {stable}: steps {steps}, "
        f"{plan.bake_s:g}s bake, {plan.interval_s:g}s interval, {plan.alpha:.2g} per test",
        flush=True,
    )
    record = controller.start()
    decision = "promoted" if record["outcome"] == "promoted" else "rolled-back"
    gha.set_outputs(
        {"outcome": record["outcome"], "decision": decision, "rollout-id": record["id"], "version": canary,
         "reason": record["reason"], "record": str(state.record_path(record["id"]).resolve())}
    )  # fmt: skip
    if record["outcome"] != "promoted":
        raise GateFailed(
            f"rollout of version {canary} {record['outcome']}: {record['reason']}",
            hint=f"traffic is on the stable version {stable}; the record: {state.record_path(record['id'])}",
        )
    return 0


def run(args: argparse.Namespace) -> int:
    from mlgate.traffic import backend_for

    if args.operation is None:
        raise InputError("no rollout operation given", hint=f"one of: {', '.join(OPERATIONS)}")
    loaded = load_config(args.config)
    if args.operation == "start":
        return _start(args, loaded)
    state = _state(loaded)
    backend: TrafficBackend = backend_for(loaded.model.traffic, loaded.root)
    if args.operation == "abort":
        from mlgate.rollout.controller import ABORTED, RUNNING, abort, controller_alive
        from mlgate.rollout.leftovers import stop_leftovers

        running = state.read()
        if args.stale_only and not (
            running is not None and running.get("phase") == RUNNING and not controller_alive(running)
        ):
            print("mlgate rollout abort: no rollout left behind by a stopped controller; nothing to do")
            for line in stop_leftovers(state.folder):
                print(f"mlgate rollout abort: {line}")
            return 0
        done = abort(state, backend, args.reason)
        print(f"mlgate rollout abort: {done}")
        current = state.read()
        # A controller that died leaves its record unclosed in the registry: close it from here.
        if current is not None and current.get("phase") == ABORTED and "audit_run_id" not in current:
            if not controller_alive(current) and args.tracking_uri:
                _finish(args, loaded, _registry(args), state)(current)
                state.write(current)
        # Traffic is on stable and the record closed: now what the dead controller started beside it.
        for line in stop_leftovers(state.folder):
            print(f"mlgate rollout abort: {line}")
        return 0
    from mlgate.rollout.report import status_text

    current = state.read()
    split = backend.current()
    shown = split.describe() if split else "no split applied yet"
    if args.json:
        print(json.dumps({"rollout": current, "split": split.to_json() if split else None}, indent=1, default=str))
    elif current is None:
        print(f"no rollout has run here ({state.path}); traffic: {shown}")
    else:
        print(status_text(current, shown))
    return 0
