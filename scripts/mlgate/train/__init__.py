"""The training gate: run the project's training in its own venv, tracked in MLflow with full lineage."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlgate.config import LoadedConfig, TrainConfig
from mlgate.dvcio import pulling, site_cache_env
from mlgate.errors import ConfigError, GateFailed, ToolError
from mlgate.mlflowio import SQL_SCHEMES, MlflowHandle, child_env, connect, redact
from mlgate.procio import stream
from mlgate.projenv import ensure_project_env
from mlgate.train import distributed, tracking
from mlgate.train.device import DeviceInfo, choose, precheck, probe
from mlgate.train.lineage import data_hashes, lineage_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "_runtime"


@dataclass(kw_only=True)
class TrainRun:
    """One execution of the training command and the MLflow run it filled."""

    run_id: str
    status: str
    seconds: float
    metrics: dict[str, float]
    model_id: str | None
    exit_code: int
    log_tail: list[str]

    @property
    def model_uri(self) -> str | None:
        return f"models:/{self.model_id}" if self.model_id else None


@dataclass
class TrainReport:
    profile: str
    experiment: str
    experiment_id: str
    tracking_uri: str  # redacted
    device: DeviceInfo
    tags: dict[str, str]
    params: dict[str, str]
    runs: list[TrainRun] = field(default_factory=list)
    repro_differences: dict[str, tuple[float, float]] = field(default_factory=dict)
    repro_checked: bool = False
    # Seconds per phase: project env, device probe, dvc pull, MLflow calls, the training command itself.
    timings: dict[str, float] = field(default_factory=dict)
    # torchrun's launch on this node (train.distributed), and every rank's host and device as the ranks reported.
    launch: distributed.Launch | None = None
    devices: list[dict[str, object]] = field(default_factory=list)

    @property
    def main(self) -> TrainRun:
        return self.runs[0]


def settings_of(loaded: LoadedConfig) -> TrainConfig:
    if loaded.model.train is None:
        raise ConfigError(
            f"{loaded.path}: no `train` section; the training gate has nothing to run",
            hint="add train.command (or train.stage) and train.profiles to mlgate.yaml",
            file=str(loaded.path),
            line=1,
        )
    return loaded.model.train


def profile_params(loaded: LoadedConfig, profile: str) -> dict[str, object]:
    settings = settings_of(loaded)
    if profile not in settings.profiles:
        declared = ", ".join(sorted(settings.profiles)) or "none"
        raise ConfigError(
            f"{loaded.path}: profile {profile!r} is not declared under train.profiles (declared: {declared})",
            hint=f"add train.profiles.{profile} to mlgate.yaml or pass one of the declared profiles",
            file=str(loaded.path),
            line=loaded.line_of("train", "profiles") or loaded.line_of("train"),
        )
    return dict(settings.profiles[profile])


def _flat_params(params: dict[str, object], profile: str, seed: int) -> dict[str, str]:
    flat = {key: value if isinstance(value, str) else json.dumps(value) for key, value in params.items()}
    flat.update({"mlgate.profile": profile, "mlgate.seed": str(seed)})
    return flat


def _command(loaded: LoadedConfig, python: Path | None) -> list[str]:
    settings = settings_of(loaded)
    if settings.stage:
        # --force: a CI run must train even when DVC thinks the outputs are current. The dvc of the
        # project venv when it has one, else mlgate's own (the train extra installs it).
        dvc = (
            [str(python.parent / "dvc")]
            if python and (python.parent / "dvc").is_file()
            else [sys.executable, "-m", "dvc"]
        )
        return [*dvc, "repro", "--force", "--single-item", settings.stage]
    return split_command(loaded)


def split_command(loaded: LoadedConfig) -> list[str]:
    """train.command as an argument list (POSIX shell quoting, no shell); a ConfigError at its line when it
    does not split or is empty."""
    command = settings_of(loaded).command or ""
    try:
        words = shlex.split(command)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        problem = f"does not split into arguments ({exc})"
    else:
        if words:
            return words
        problem = "is empty"
    raise ConfigError(
        f"{loaded.path}: train.command {command!r} {problem}",
        hint="quote as a POSIX shell would (close every ' and \"); no shell runs it, so pipes and && do not "
        "work: put several steps in a script",
        file=str(loaded.path),
        line=loaded.line_of("train", "command") or loaded.line_of("train"),
    )


def _environment(
    python: Path | None, run_id: str, experiment_id: str, uri: str, profile: str, params: dict[str, object],
    seed: int, device: str, deterministic: bool,
) -> dict[str, str]:  # fmt: skip
    env = dict(os.environ)
    if python is not None:
        env["VIRTUAL_ENV"] = str(python.parent.parent)
        env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(RUNTIME_DIR), env.get("PYTHONPATH", "")) if p)
    env.update(
        {
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_EXPERIMENT_ID": experiment_id,
            "MLGATE_PROFILE": profile,
            "MLGATE_PARAMS": json.dumps(params),
            "MLGATE_SEED": str(seed),
            "MLGATE_DEVICE": device,
            "MLGATE_DETERMINISTIC": "1" if deterministic else "0",
            "PYTHONHASHSEED": str(seed),
        }
    )
    if deterministic:
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # mlgate's own fail-fast client settings must not reach the training's MLflow client; bounded ones do.
    return child_env(env)


def require_sql_store(python: str | Path, tracking_uri: str) -> None:
    """A SQL tracking store needs MLflow's SQL backend in the project venv too, where the training logs.

    mlflow-skinny (a common choice for a project's MLflow client) has none: without this check the
    training would start and die in MLflow's store registry, its traceback relayed as the failure.
    """
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in SQL_SCHEMES:
        return
    probe_code = "import sqlalchemy, alembic"
    done = subprocess.run([str(python), "-c", probe_code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ToolError(
            f"the tracking URI {redact(tracking_uri)} is a SQL store, but the project venv ({python}) cannot open "
            "one: sqlalchemy and alembic are not installed there (mlflow-skinny leaves them out)",
            hint="depend on `mlflow` (not mlflow-skinny) in the project's environment.install, add sqlalchemy and "
            "alembic to it, or train against an MLflow server (--tracking-uri http://...)",
        )


def train(
    loaded: LoadedConfig,
    *,
    profile: str,
    tracking_uri: str,
    device: str | None = None,
    require_gpu: bool | None = None,
    repro_check: bool = False,
    pull_data: bool = True,
    dvc_remote_url: str | None = None,
) -> TrainReport:
    """Train once (twice with `repro_check`), each in a fresh MLflow run carrying the lineage tags."""
    settings = settings_of(loaded)
    params = profile_params(loaded, profile)
    hashes = data_hashes(loaded)  # a missing dvc.lock fails here, before anything is installed or trained
    wanted_device, gpu_required = _precheck(loaded, settings, device, require_gpu)
    laps = _Laps()
    session = _set_up(loaded, settings, params, tracking_uri, wanted_device, gpu_required, laps,
                      pull_data=pull_data, dvc_remote_url=dvc_remote_url)  # fmt: skip
    report = _new_report(session, profile, hashes)
    if session.launch is not None and session.launch.node_rank > 0:
        # Global rank 0, which logs, is on node 0: its gate opens the one MLflow run; this node only trains.
        _train_other_node(session, report, session.launch)
        report.timings = dict(laps.timings)
        return report
    for attempt in range(2 if repro_check else 1):
        run_tags = dict(report.tags)
        if attempt == 1:
            run_tags["mlgate.repro_of"] = report.main.run_id
        laps("lineage")
        _train_once(session, report, run_tags)
    report.timings = dict(laps.timings)
    if repro_check:
        _compare_runs(report, settings)
    return report


class _Laps:
    """Seconds per phase (project env, device probe, dvc pull, MLflow calls, training): each lap ends the last."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = collections.defaultdict(float)
        self._clock = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] += now - self._clock
        self._clock = now


@dataclass
class _Session:
    """What every run of one `train` call shares: the config, the server, the venv, the device and the command."""

    loaded: LoadedConfig
    settings: TrainConfig
    params: dict[str, object]
    tracking_uri: str
    server: MlflowHandle
    python: Path | None
    info: DeviceInfo
    launch: distributed.Launch | None
    command: list[str]
    laps: _Laps


def _precheck(
    loaded: LoadedConfig, settings: TrainConfig, device: str | None, require_gpu: bool | None
) -> tuple[str, bool]:
    """The device wanted and whether a GPU is required, checked before anything is installed or trained."""
    wanted_device = device or settings.device
    gpu_required = settings.require_gpu if require_gpu is None else require_gpu
    precheck(wanted_device, gpu_required)
    if not settings.stage:
        split_command(loaded)  # a command that does not split fails here, before any MLflow run is opened
    return wanted_device, gpu_required


def _set_up(
    loaded: LoadedConfig, settings: TrainConfig, params: dict[str, object], tracking_uri: str, wanted_device: str,
    gpu_required: bool, laps: _Laps, *, pull_data: bool, dvc_remote_url: str | None,
) -> _Session:  # fmt: skip
    """Reach the server, build the project venv, probe the device and plan the launch, while the data comes down."""
    # The data comes down (another process) while MLflow, the venv and the device are set up; any of those
    # failing stops the pull, so a wrong or unreachable server still fails fast.
    with pulling(loaded, list(loaded.model.data.sources), dvc_remote_url, enabled=pull_data):
        # Fail fast on a wrong or unreachable server, before minutes of installing and training.
        server = connect(tracking_uri).reached()
        laps("mlflow")
        python = ensure_project_env(loaded)
        if python is not None:
            require_sql_store(python, tracking_uri)
        laps("project_env")
        info = choose(probe(python or sys.executable), wanted_device, gpu_required)
        launch = distributed.plan(settings.distributed, info, gpu_required)
        laps("device_probe")
    laps("dvc_pull")  # what the pull took beyond the set-up it overlapped
    return _Session(
        loaded=loaded,
        settings=settings,
        params=params,
        tracking_uri=tracking_uri,
        server=server,
        python=python,
        info=info,
        launch=launch,
        command=_command(loaded, python),
        laps=laps,
    )


def _new_report(session: _Session, profile: str, hashes: dict[str, str]) -> TrainReport:
    """The report before any run: the lineage tags, the flat params and the experiment every run goes to."""
    loaded, settings, launch = session.loaded, session.settings, session.launch
    return TrainReport(
        profile=profile,
        experiment=settings.experiment or loaded.model.project,
        experiment_id="",
        tracking_uri=tracking.redact(session.tracking_uri),
        device=session.info,
        tags=lineage_tags(loaded, session.info, profile, hashes) | (launch.tags() if launch else {}),
        params=_flat_params(session.params, profile, settings.seed),
        launch=launch,
    )


def _train_once(session: _Session, report: TrainReport, run_tags: dict[str, str]) -> None:
    """One MLflow run: open it, train in it and end it, then check what it logged and tag its model."""
    opened = tracking.open_run(session.server, report.experiment, run_tags, report.params)
    report.experiment_id = opened.experiment_id
    run, failure = _run_and_end(session, report, opened)
    report.runs.append(run)
    if run.exit_code != 0:
        raise _training_failed(session.command, run, failure)
    _check_result(session.loaded, run)
    if run.model_id:
        lineage = {k: v for k, v in report.tags.items() if k.startswith("mlgate.")}
        session.server.client.set_logged_model_tags(run.model_id, lineage)  # redacted by lineage_tags
    session.laps("mlflow")


def _run_and_end(
    session: _Session, report: TrainReport, opened: tracking.OpenedRun
) -> tuple[TrainRun, distributed.RankFailure | None]:
    """Train in the opened run and end it (FINISHED, or FAILED as the command failed); read its metrics and model.

    From the start every failure ends the run (FAILED, KILLED on Ctrl-C), so none is left RUNNING for ever.
    """
    server = session.server
    ended = False
    try:
        session.laps("mlflow")
        done = _train_in_run(session, report, opened)
        if session.launch is not None:
            _tag_ranks(session, report, opened, done)
        if done.code != 0:
            mark_failed = functools.partial(server.client.set_terminated, opened.run_id, "FAILED")
            server.call("marking the run failed", mark_failed)
        status, metrics = tracking.finished_metrics(server, opened.run_id)
        if done.code == 0 and status == "RUNNING":
            server.client.set_terminated(opened.run_id, "FINISHED")
            status = "FINISHED"
        ended = True
        model_id = tracking.logged_model_id(server, opened.experiment_id, opened.run_id)
    except BaseException as exc:
        if not ended:
            _end_run(server, opened.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return TrainRun(
        run_id=opened.run_id,
        status=status,
        seconds=done.seconds,
        metrics=metrics,
        model_id=model_id,
        exit_code=done.code,
        log_tail=done.tail,
    ), done.failure


def _train_in_run(session: _Session, report: TrainReport, opened: tracking.OpenedRun) -> _Launched:
    """Run the training command in the opened run and upload its log (and each rank's) to the run, best effort."""
    settings, server = session.settings, session.server
    env = _environment(
        session.python, opened.run_id, opened.experiment_id, session.tracking_uri, report.profile, session.params,
        settings.seed, session.info.chosen, settings.deterministic,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mlgate-train-") as tmp:
        done = _launch(session.loaded, session.command, session.launch, env, Path(tmp), session.tracking_uri)
        session.laps("training")
        try:
            server.client.log_artifact(opened.run_id, str(done.log_path), artifact_path="mlgate")
            if session.launch is not None and done.rank_logs.is_dir():
                server.client.log_artifacts(opened.run_id, str(done.rank_logs), artifact_path="mlgate/ranks")
        except Exception as exc:
            print(f"mlgate: could not upload train.log: {server.scrub(str(exc))[:200]}")
    return done


def _tag_ranks(session: _Session, report: TrainReport, opened: tracking.OpenedRun, done: _Launched) -> None:
    """A distributed run's devices (and the rank that failed first) on the report and as tags of the run."""
    report.devices = done.devices
    dist_tags = distributed.device_tags(done.devices)
    if done.failure is not None:
        dist_tags["mlgate.failure"] = _failure_text(done.failure)[-5000:]
    report.tags.update(dist_tags)
    if dist_tags:
        set_tags = functools.partial(_set_run_tags, session.server.client, opened.run_id, dist_tags)
        session.server.call("tagging the run", set_tags)


def _training_failed(command: list[str], run: TrainRun, failure: distributed.RankFailure | None) -> GateFailed:
    if failure is not None:
        return GateFailed(
            f"training command `{shlex.join(command)}` failed under torchrun: {_failure_text(failure)} "
            f"(torchrun stopped the other ranks; MLflow run {run.run_id} marked FAILED)",
            hint="each rank's log is in the run's artifacts (mlgate/ranks); reproduce with `mlgate train` "
            "locally, or with train.distributed: none to rule the launcher out",
        )
    return GateFailed(
        f"training command `{shlex.join(command)}` failed with exit code {run.exit_code} "
        f"(MLflow run {run.run_id} marked FAILED); last lines:\n" + "\n".join(run.log_tail[-12:]),
        hint="the job summary has the last lines of the log; reproduce with `mlgate train` locally",
    )


def _compare_runs(report: TrainReport, settings: TrainConfig) -> None:
    """The repro check: each metric of the two runs within train.repro_tolerance (a missing one differs)."""
    report.repro_checked = True
    first, second = report.runs
    names = settings.metrics or sorted(set(first.metrics) & set(second.metrics))
    for name in names:
        a, b = first.metrics.get(name, float("nan")), second.metrics.get(name, float("nan"))
        if not abs(a - b) <= settings.repro_tolerance:  # a missing metric (NaN) fails too
            report.repro_differences[name] = (a, b)


def _failure_text(failure: distributed.RankFailure) -> str:
    code = f"exit code {failure.exit_code}" if failure.exit_code is not None else "failed"
    return f"rank {failure.rank} (local rank {failure.local_rank}) {code}; its last lines:\n" + "\n".join(
        failure.last_lines
    )


def _set_run_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])  # one request


@dataclass
class _Launched:
    """One start of the training command, its log files still in their folder."""

    code: int
    tail: list[str]  # the console's last lines, scrubbed of the tracking URI's secrets
    seconds: float
    log_path: Path
    rank_logs: Path  # torchrun's log of each rank (distributed only)
    devices: list[dict[str, object]]  # every rank's host and device, as rank 0 recorded them (distributed only)
    failure: distributed.RankFailure | None  # the rank torchrun names as the first failure, scrubbed likewise


def _launch(
    loaded: LoadedConfig, command: list[str], launch: distributed.Launch | None, env: dict[str, str], folder: Path,
    tracking_uri: str,
) -> _Launched:  # fmt: skip
    """Start `command` (through torchrun under `launch`) with its logs in `folder`: the one way both node 0's gate
    and another node's start it and read how it ended."""
    log_path, rank_logs, devices_file = folder / "train.log", folder / "ranks", folder / "devices.json"
    started = command
    if launch is not None:
        started = distributed.command(loaded, command, launch, rank_logs)
        env.update(distributed.environment(launch, devices_file))
    site_cache_env(loaded.root.resolve(), env)  # `dvc repro` of train.stage, or the training's own dvc
    code, tail, seconds = _start(started, loaded, env, log_path)
    tail = [tracking.scrub(line, tracking_uri) for line in tail]
    failure = distributed.failed_rank(tail, rank_logs) if launch is not None and code != 0 else None
    if failure is not None:
        failure = dataclasses.replace(failure, last_lines=[tracking.scrub(x, tracking_uri) for x in failure.last_lines])
    found = distributed.devices(devices_file) if launch is not None else []
    return _Launched(code, tail, seconds, log_path, rank_logs, found, failure)


def _train_other_node(session: _Session, report: TrainReport, launch: distributed.Launch) -> None:
    """A node other than 0 of a multi-node run: its ranks train (none of them is rank 0, none logs), with no
    MLflow run of its own; a failure is named by rank as on node 0."""
    settings, command = session.settings, session.command
    env = _environment(session.python, "", "", session.tracking_uri, report.profile, session.params, settings.seed,
                       session.info.chosen, settings.deterministic)  # fmt: skip
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="mlgate-train-") as tmp:
        done = _launch(session.loaded, command, launch, env, Path(tmp), session.tracking_uri)
    code, tail = done.code, done.tail
    report.runs.append(
        TrainRun(
            run_id="",
            status="FINISHED" if code == 0 else "FAILED",
            seconds=done.seconds,
            metrics={},
            model_id=None,
            exit_code=code,
            log_tail=tail,
        )
    )
    if code != 0:
        what = _failure_text(done.failure) if done.failure else "last lines:\n" + "\n".join(tail[-12:])
        raise GateFailed(
            f"node {launch.node_rank} of {launch.nnodes}: training command `{shlex.join(command)}` failed under "
            f"torchrun: {what}",
            hint="node 0's gate marks the MLflow run FAILED; fix the rank that failed first",
        )


def _start(
    command: list[str], loaded: LoadedConfig, env: dict[str, str], log_path: Path
) -> tuple[int, list[str], float]:
    hint = "fix train.command in mlgate.yaml, or add what provides it to environment.install"
    try:
        return stream(command, loaded.root, env, log_path, hint=hint)
    except OSError as exc:  # found but not startable: not executable, no interpreter line, a folder
        raise ToolError(
            f"cannot start the training command `{shlex.join(command)}`: {exc.strerror or exc}",
            hint=hint,
            file=str(loaded.path),
            line=loaded.line_of("train", "command") or loaded.line_of("train"),
        ) from None


def _end_run(server: MlflowHandle, run_id: str, status: str) -> None:
    """End a run the gate opened and cannot finish; best effort, so the failure that got here is the one shown."""
    try:
        server.call(f"marking run {run_id} {status}", lambda: server.client.set_terminated(run_id, status))
    except Exception as exc:
        print(f"mlgate: could not mark MLflow run {run_id} {status}: {server.scrub(str(exc))[:200]}")
    else:
        print(f"mlgate: MLflow run {run_id} marked {status}")


def _check_result(loaded: LoadedConfig, run: TrainRun) -> None:
    settings = settings_of(loaded)
    missing = [name for name in settings.metrics if name not in run.metrics]
    if missing:
        raise GateFailed(
            f"the training finished but did not log {', '.join(missing)} (declared in train.metrics) "
            f"to MLflow run {run.run_id}; it logged: {', '.join(sorted(run.metrics)) or 'nothing'}",
            hint="log each holdout metric with mlflow.log_metric inside `mlflow.start_run()`, or fix train.metrics",
            file=str(loaded.path),
            line=loaded.line_of("train", "metrics"),
        )
    if settings.log_model and run.model_id is None:
        raise GateFailed(
            f"the training finished but logged no model to MLflow run {run.run_id}",
            hint="call mlflow.<flavor>.log_model(name='model', ...) inside `mlflow.start_run()`, "
            "or set train.log_model: false",
            file=str(loaded.path),
            line=loaded.line_of("train"),
        )


__all__ = ["TrainReport", "TrainRun", "profile_params", "settings_of", "train"]
