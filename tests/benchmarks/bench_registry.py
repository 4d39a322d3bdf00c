"""Registry benchmark: latency of register, promote and rollback, and how `history` scales, on a real server.

Everything runs against a throwaway `mlflow server` (sqlite backend, 127.0.0.1, its own process
group, stopped at the end) started by mlgate.localci.mlflow_server.MlflowServer.

1. Latency, in process: mlgate.registry.operations.register, promote and rollback on a Registry
   whose client talks to the server, `--repeats` times, each round on a fresh logged model (made
   with the client, not timed): register it as @challenger, promote it (@previous -> the old
   champion), roll back (@champion -> @previous). Each operation holds the registered model's lock,
   which waits LOCK_SETTLE_S (0.3 s) for a racing writer: that sleep is part of every figure.
2. Latency, end to end: the same three operations as `mlgate registry ...` commands, `--cli-repeats`
   times. Their wall time is mostly Python starting and importing mlgate and MLflow.
3. History scaling: one registered model gets `--versions` versions and every tenth of them is
   promoted by operations.promote; each operation writes its real audit record (one run of the audit
   experiment). Versions are registered by operations.register for the first `--setup-budget`
   seconds (LOCK_SETTLE_S set to 0 meanwhile: no second writer races here), then, because a register
   costs about 36 requests, the rest are made with create_model_version and their audit records
   written with mlgate.registry.audit.write, the call register ends with; the summary and the JSON
   say how many of each. operations.history is timed when the audit log holds 10, 100 and 1,000
   records of the model, and at the end; history reads the audit experiment with search_runs, 1,000
   runs a page. `status` and `mlgate registry history` (the CLI, every record printed) are timed on
   the full model.

The release workflow's wall time under act, stage by stage, is measured by tests/e2e, not here:
the JSON says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate.mlflowio import no_telemetry

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import bench_parser, machine, write_record

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlgate.registry import Registry
    from mlgate.registry.audit import Who

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """\
version: 1
project: bench
registry:
  model: {model}
  audit_experiment: {audit}
  promotion: {{ metric: roc_auc, margin: 0.01, guards: {{ pr_auc: 0.02 }} }}
"""
HISTORY_CHECKPOINTS = (10, 100, 1000)
HISTORY_REPEATS = 5  # timed reads of the audit log at each checkpoint (p50 and p95 of these)
PROMOTE_EVERY = 10  # in the history setup: every tenth version is promoted as well as registered
ACT_NOTE = (
    "measured by tests/e2e; not here: the release workflow under act (tests/e2e/test_release_workflow.py, "
    "train to promote, minutes a run) offers no per-stage timing hook cheap enough for a benchmark"
)


@dataclass
class Stage:
    """One row of the table: the samples (seconds) of one measured thing."""

    name: str
    samples: list[float]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def p50(self) -> float:
        return statistics.median(self.samples)

    def p95(self) -> float:
        if len(self.samples) < 2:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=20, method="inclusive")[18]

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "count": len(self.samples),
            "p50_s": self.p50(),
            "p95_s": self.p95(),
            "samples_s": self.samples,
            "note": self.note,
            **self.extra,
        }


def mlgate_executable() -> Path:
    """The `mlgate` of this interpreter's venv (`make bench` runs .venv/bin/python), else the repository's."""
    beside = Path(sys.executable).with_name("mlgate")
    return beside if beside.is_file() else ROOT / ".venv" / "bin" / "mlgate"


def evidence_json(champion_version: str | None) -> dict[str, Any]:
    """The test-model `evidence` of a challenger that beats the champion by more than the margin."""
    metrics: dict[str, Any] = {"candidate": {"roc_auc": 0.80, "pr_auc": 0.30}, "champion": None}
    if champion_version:
        metrics["champion"] = {"roc_auc": 0.70, "pr_auc": 0.30}
    return {"passed": True, "promotable": True, "metrics": metrics, "champion_version": champion_version or ""}


class Bench:
    """The server, a client of it, and the experiment the logged models are made in."""

    def __init__(self, root: Path, uri: str) -> None:
        import mlflow
        from mlgate.mlflowio import reach

        self.root, self.uri = root, uri
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # an INFO line per version created (set at import)
        mlflow.set_tracking_uri(uri)  # register resolves models:/ sources through the global URI, as the CLI sets
        mlflow.set_registry_uri(uri)
        self.client: MlflowClient = reach(uri)
        self.experiment = self.client.create_experiment("bench-registry")
        self.commits = 0

    def logged_model(self) -> str:
        """A fresh logged model with a training run carrying lineage tags: what train leaves for register."""
        self.commits += 1
        tags = {"mlgate.git.commit": f"{self.commits:040x}", "mlgate.dvc.data/train.csv": "ab12"}
        run = self.client.create_run(self.experiment, tags=tags)
        self.client.log_metric(run.info.run_id, "holdout_roc_auc", 0.8)
        self.client.set_terminated(run.info.run_id)
        model = self.client.create_logged_model(self.experiment, source_run_id=run.info.run_id)
        return f"models:/{model.model_id}"

    def config(self, model: str, audit: str) -> Path:
        path = self.root / f"{model}.yaml"
        path.write_text(CONFIG.format(model=model, audit=audit), encoding="utf-8")
        return path

    def registry(self, config: Path) -> tuple[Any, Registry]:
        from mlgate.config import load_config
        from mlgate.registry import Registry, champion_alias, model_name

        loaded = load_config(config)
        name = model_name(loaded)
        return loaded, Registry(
            self.client, self.uri, name, loaded.model.registry.audit_experiment, champion_alias(loaded)
        )


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def expect(decision: Any, wanted: str) -> None:
    if decision.decision != wanted:
        raise SystemExit(
            f"{decision.operation} v{decision.version}: {decision.decision}, not {wanted}: {decision.reason}"
        )


def in_process_latency(bench: Bench, who: Who, repeats: int) -> list[Stage]:
    from mlgate.registry import CHAMPION, LOCK_SETTLE_S
    from mlgate.registry import operations as ops

    loaded, registry = bench.registry(bench.config("bench-latency", "mlgate-audit"))
    # A first champion, untimed: every timed round then registers, promotes over it, and rolls back to it.
    expect(ops.register(registry, bench.logged_model(), ops.Evidence(evidence_json(None)), who), "registered")
    expect(ops.promote(loaded, registry, who), "promoted")
    samples: dict[str, list[float]] = {"register": [], "promote": [], "rollback": []}
    for round_ in range(repeats):
        model_uri = bench.logged_model()
        champion = registry.aliases().get(CHAMPION)
        evidence = ops.Evidence(evidence_json(champion))
        decision, seconds = timed(lambda: ops.register(registry, model_uri, evidence, who))
        expect(decision, "registered")
        samples["register"].append(seconds)
        decision, seconds = timed(lambda: ops.promote(loaded, registry, who))
        expect(decision, "promoted")
        samples["promote"].append(seconds)
        decision, seconds = timed(lambda: ops.rollback(registry, who, f"benchmark round {round_}"))
        expect(decision, "rolled-back")
        samples["rollback"].append(seconds)
    note = f"in process; incl. the lock's {LOCK_SETTLE_S * 1000:.0f} ms settle wait"
    return [Stage(f"{operation} (in process)", values, note) for operation, values in samples.items()]


def cli_latency(bench: Bench, who: Who, repeats: int) -> list[Stage]:
    from mlgate.registry import CHAMPION
    from mlgate.registry import operations as ops

    config = bench.config("bench-cli", "mlgate-audit")
    loaded, registry = bench.registry(config)
    expect(ops.register(registry, bench.logged_model(), ops.Evidence(evidence_json(None)), who), "registered")
    expect(ops.promote(loaded, registry, who), "promoted")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_", "MLGATE_"))}
    env.update(GITHUB_OUTPUT=str(bench.root / "github-output"), GITHUB_STEP_SUMMARY=str(bench.root / "summary.md"))
    no_telemetry(env)
    mlgate = str(mlgate_executable())

    def cli(*args: str, wanted: str) -> float:
        command = [mlgate, "registry", *args, "--config", str(config), "--tracking-uri", bench.uri]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0 or wanted not in done.stdout:
            raise SystemExit(
                f"{' '.join(command)} ({done.returncode}), expected {wanted!r}:\n{done.stdout}{done.stderr}"
            )
        return seconds

    samples: dict[str, list[float]] = {"register": [], "promote": [], "rollback": []}
    for round_ in range(repeats):
        champion = registry.aliases().get(CHAMPION)
        evidence = json.dumps({"model_tests": evidence_json(champion)})
        samples["register"].append(
            cli("register", "--model-uri", bench.logged_model(), "--evidence", evidence, wanted=": registered:")
        )
        samples["promote"].append(cli("promote", wanted=": promoted:"))
        samples["rollback"].append(cli("rollback", "--reason", f"benchmark round {round_}", wanted=": rolled-back:"))
    note = "`mlgate registry` end to end: mostly Python start and imports"
    return [Stage(f"{operation} (CLI)", values, note) for operation, values in samples.items()]


def history_scaling(bench: Bench, who: Who, versions: int, budget_s: float) -> tuple[list[Stage], dict[str, Any]]:
    import mlgate.registry as registry_module
    from mlgate.registry import CHAMPION, METRIC_TAG, audit
    from mlgate.registry import operations as ops
    from mlgate.registry.audit import AuditRecord

    config = bench.config("bench-history", "mlgate-audit-history")
    loaded, registry = bench.registry(config)
    stages: list[Stage] = []
    records = 0
    checkpoints = [count for count in HISTORY_CHECKPOINTS if count <= versions]
    via_operations = via_write = promotions = 0
    reading_s = 0.0  # the history reads at the checkpoints, kept out of the setup's time and budget

    def read_history(label: str) -> None:
        nonlocal reading_s
        begun = time.perf_counter()
        found, _ = timed(lambda: ops.history(registry))
        if len(found) != records:
            raise SystemExit(f"history returned {len(found)} records, {records} were written")
        samples = [timed(lambda: ops.history(registry))[1] for _ in range(HISTORY_REPEATS)]
        stage = Stage(f"history ({label}{records:,} records)", samples, extra={"records": records})
        stage.extra["records_per_s"] = records / stage.p50()
        stage.note = f"{stage.extra['records_per_s']:,.0f} records/s; {-(-records // 1000)} page(s) of search_runs"
        stages.append(stage)
        reading_s += time.perf_counter() - begun
        print(f"history at {records:,} records: p50 {stage.p50() * 1000:.1f} ms", flush=True)

    def wrote_one() -> None:
        nonlocal records
        records += 1
        if checkpoints and records == checkpoints[0]:
            checkpoints.pop(0)
            read_history("")

    settle, registry_module.LOCK_SETTLE_S = registry_module.LOCK_SETTLE_S, 0.0
    started = time.perf_counter()
    try:
        for number in range(1, versions + 1):
            model_uri = bench.logged_model()
            champion = registry.aliases().get(CHAMPION) if number % PROMOTE_EVERY == 0 else None
            if via_write or time.perf_counter() - started - reading_s > budget_s:
                # Past the budget: the version straight from the client, its audit record written as register does.
                # Its tags hold what register records, so that promote judges it the same way.
                tested = evidence_json(champion)
                tags = {
                    "mlgate.model_uri": model_uri,
                    "mlgate.model_tests.passed": "true",
                    METRIC_TAG: json.dumps(tested["metrics"], sort_keys=True),
                    "mlgate.model_tests.champion_version": tested["champion_version"],
                }
                model_id = model_uri.removeprefix("models:/")
                created = bench.client.create_model_version(registry.name, model_uri, tags=tags, model_id=model_id)
                reason = f"version {created.version} registered by the benchmark's setup (audit.write)"
                evidence = {"model_uri": model_uri, "tags": tags}  # the shape of register's, for the record's size
                record = AuditRecord(
                    operation="register",
                    model=registry.name,
                    version=str(created.version),
                    decision="registered",
                    reason=reason,
                    who=who,
                )
                record.evidence = evidence
                audit.write(bench.client, registry.audit_experiment, record)
                version = str(created.version)
                via_write += 1
            else:
                decision = ops.register(registry, model_uri, ops.Evidence(evidence_json(champion)), who)
                expect(decision, "registered")
                version = decision.version
                via_operations += 1
            wrote_one()
            if number % PROMOTE_EVERY == 0:
                expect(ops.promote(loaded, registry, who, version), "promoted")
                promotions += 1
                wrote_one()
            if number % 100 == 0:
                print(f"history setup: {number:,} versions, {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        registry_module.LOCK_SETTLE_S = settle
    setup_s = time.perf_counter() - started - reading_s
    read_history("all ")
    status_samples = [timed(lambda: ops.status(registry))[1] for _ in range(HISTORY_REPEATS)]
    stages.append(Stage(f"status ({versions:,} versions)", status_samples, "the aliases and the versions they name"))
    setup = {
        "versions": versions,
        "promotions": promotions,
        "records": records,
        "via_operations_register": via_operations,
        "via_audit_write": via_write,
        "lock_settle_s_during_setup": 0.0,
        "setup_s": setup_s,
    }
    return stages, setup


def cli_history(bench: Bench, repeats: int, records: int) -> Stage:
    config = bench.root / "bench-history.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_", "MLGATE_"))}
    no_telemetry(env)
    command = [str(mlgate_executable()), "registry", "history", "--config", str(config), "--tracking-uri", bench.uri]
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
        samples.append(time.perf_counter() - started)
        if done.returncode != 0 or f"{records} record(s)" not in done.stdout:
            raise SystemExit(f"{' '.join(command)} ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr}")
    return Stage(f"history CLI ({records:,} records)", samples, "`mlgate registry history`, every record printed")


def duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def markdown(stages: list[Stage]) -> str:
    lines = ["| stage | count | p50 | p95 | note |", "|---|---:|---:|---:|---|"]
    for stage in stages:
        cells = [stage.name, str(len(stage.samples)), duration(stage.p50()), duration(stage.p95()), stage.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = bench_parser(__doc__, "registry")
    parser.add_argument("--versions", type=int, default=1000, help="versions of the history model")
    parser.add_argument("--repeats", type=int, default=20, help="in-process rounds of register, promote, rollback")
    parser.add_argument("--cli-repeats", type=int, default=3, help="rounds of the same as `mlgate registry` commands")
    parser.add_argument(
        "--setup-budget",
        type=float,
        default=120,
        help="seconds the history setup registers versions through operations.register; the rest are made with "
        "create_model_version and audit.write",
    )
    args = parser.parse_args()
    no_telemetry()  # before MLflow is imported
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a "View run" line per audit run

    from mlgate.localci.mlflow_server import MlflowServer
    from mlgate.registry.audit import Who

    who = Who("bench", [], "", "c0ffee", "mlgate/bench", "")
    root = Path(tempfile.mkdtemp(prefix="mlgate-bench-registry-"))
    server = MlflowServer(root / "mlflow")
    total = time.perf_counter()
    try:
        server.start()
        print(f"mlflow server at {server.uri} (sqlite {server.store})", flush=True)
        bench = Bench(root, server.uri)
        stages = in_process_latency(bench, who, args.repeats)
        print(f"in process: {args.repeats} rounds done", flush=True)
        stages += cli_latency(bench, who, args.cli_repeats)
        print(f"CLI: {args.cli_repeats} rounds done", flush=True)
        scaling, setup = history_scaling(bench, who, args.versions, args.setup_budget)
        stages += scaling
        stages.append(cli_history(bench, args.cli_repeats, setup["records"]))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    total_s = time.perf_counter() - total

    print()
    print(markdown(stages))
    print()
    made = f"{setup['via_operations_register']:,} by operations.register"
    if setup["via_audit_write"]:
        made += f", {setup['via_audit_write']:,} by create_model_version + audit.write (past --setup-budget)"
    print(
        f"history setup: {setup['versions']:,} versions ({made}), {setup['promotions']} promotions by "
        f"operations.promote, {setup['records']:,} audit records in {setup['setup_s']:.0f} s (lock settle wait 0)"
    )
    print(f"release workflow under act: {ACT_NOTE}")
    print(f"total {total_s:.0f} s")
    payload = {
        "benchmark": "registry",
        **machine(),
        "server": "mlflow server, sqlite backend, 127.0.0.1, 1 worker",
        "repeats": args.repeats,
        "cli_repeats": args.cli_repeats,
        "stages": [stage.to_json() for stage in stages],
        "history_setup": setup,
        "release_workflow_under_act": ACT_NOTE,
        "total_s": total_s,
    }
    write_record(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
