"""The registry gate on a real MLflow store: releases, promotions, a rejected challenger, rollbacks, races,
and a server that stops answering between two alias moves (the moves are undone)."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlgate.config import load_config
from mlgate.errors import ConfigError, GateFailed, InputError, ToolError
from mlgate.registry import Registry
from mlgate.registry import operations as ops
from mlgate.registry.audit import Who

ROOT = Path(__file__).resolve().parents[2]
MLGATE = ROOT / ".venv" / "bin" / "mlgate"
CONFIG = """\
version: 1
project: toy
registry:
  model: {model}
  promotion: {{ metric: roc_auc, margin: 0.01, guards: {{ pr_auc: 0.02 }} }}
"""


def evidence(roc_auc: float, pr_auc: float, champion: tuple[float, float] | None, version: str = "") -> ops.Evidence:
    metrics: dict[str, Any] = {"candidate": {"roc_auc": roc_auc, "pr_auc": pr_auc}, "champion": None}
    if champion:
        metrics["champion"] = {"roc_auc": champion[0], "pr_auc": champion[1]}
    return ops.Evidence({"passed": True, "promotable": True, "metrics": metrics, "champion_version": version})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # the registry resolves models:/ sources through the global URI
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("toy", artifact_location=(root / "artifacts").as_uri())

    def logged_model(commit: str) -> str:
        run = client.create_run(experiment, tags={"mlgate.git.commit": commit, "mlgate.dvc.data/train.csv": "ab12"})
        client.log_metric(run.info.run_id, "holdout_roc_auc", 0.8)
        client.set_terminated(run.info.run_id)
        return f"models:/{client.create_logged_model(experiment, source_run_id=run.info.run_id).model_id}"

    try:
        yield SimpleNamespace(uri=uri, client=client, root=root, logged_model=logged_model)
    finally:
        mlflow.set_tracking_uri(previous)


def project(tmp_path: Path, model: str) -> Any:
    path = tmp_path / "mlgate.yaml"
    path.write_text(CONFIG.format(model=model))
    return load_config(path)


def registry(store: SimpleNamespace, name: str) -> Registry:
    return Registry(store.client, store.uri, name, "mlgate-audit")


WHO = Who("alice", ["bob"], "https://github.com/o/r/actions/runs/1", "c0ffee", "o/r", "production")


def test_two_releases_a_rejected_challenger_and_a_rollback_leave_a_readable_trail(
    store: SimpleNamespace, tmp_path: Path
) -> None:
    loaded = project(tmp_path, "fraud")
    reg = registry(store, "fraud")
    first = ops.register(reg, store.logged_model("aaa111"), evidence(0.78, 0.10, None), WHO)
    assert (first.version, first.aliases_after) == ("1", {"challenger": "1"})
    tags = store.client.get_model_version("fraud", "1").tags
    assert tags["mlgate.git.commit"] == "aaa111" and tags["mlgate.dvc.data/train.csv"] == "ab12"
    assert json.loads(tags["mlgate.metrics"])["candidate"]["roc_auc"] == 0.78
    promoted = ops.promote(loaded, reg, WHO)
    assert promoted.decision == "promoted" and promoted.aliases_after == {"challenger": "1", "champion": "1"}
    again = ops.promote(loaded, reg, WHO)  # idempotent: nothing moves, and it says so
    assert again.decision == "unchanged" and "already @champion" in again.reason and not again.changed

    # v2 beats v1 by more than the margin on the same rows: it becomes champion, v1 becomes @previous.
    ops.register(reg, store.logged_model("bbb222"), evidence(0.80, 0.11, (0.78, 0.10), "1"), WHO)
    second = ops.promote(loaded, reg, WHO)
    assert second.aliases_after == {"challenger": "2", "champion": "2", "previous": "1"}
    assert "beats the champion's 0.7800 by +0.0200" in second.reason

    # v3 does not beat v2 by the margin: refused, the aliases unchanged, the reason recorded on the version.
    ops.register(reg, store.logged_model("ccc333"), evidence(0.805, 0.11, (0.80, 0.11), "2"), WHO)
    refused = ops.promote(loaded, reg, WHO)
    assert refused.decision == "rejected" and not refused.changed
    assert "does not beat the champion's 0.8000 by the margin 0.01" in refused.reason
    assert reg.aliases() == {"challenger": "3", "champion": "2", "previous": "1"}
    assert store.client.get_model_version("fraud", "3").tags["mlgate.audit.promote.decision"] == "rejected"

    back = ops.rollback(reg, WHO, "p95 latency doubled in production")
    assert back.aliases_after == {"challenger": "3", "champion": "1"}  # @previous consumed
    with pytest.raises(InputError, match="no @previous version"):
        ops.rollback(reg, WHO, "again")

    trail = ops.history(reg)
    assert [(r.operation, r.version, r.decision) for r in trail] == [
        ("register", "1", "registered"),
        ("promote", "1", "promoted"),
        ("promote", "1", "unchanged"),
        ("register", "2", "registered"),
        ("promote", "2", "promoted"),
        ("register", "3", "registered"),
        ("promote", "3", "rejected"),
        ("rollback", "1", "rolled-back"),
    ]
    last = trail[-1]
    assert last.who.actor == "alice" and last.who.approvers == ["bob"] and last.who.commit == "c0ffee"
    assert "p95 latency doubled" in last.reason and last.aliases_before["champion"] == "2"
    assert trail[4].evidence["candidate"]["roc_auc"] == 0.80  # the metrics compared are in the record
    status = ops.status(reg)
    assert status["champion"]["version"] == "1" and status["champion"]["commit"] == "aaa111"


def test_guards_failed_tests_and_stale_evidence_refuse_promotion(store: SimpleNamespace, tmp_path: Path) -> None:
    loaded = project(tmp_path, "guarded")
    reg = registry(store, "guarded")
    ops.register(reg, store.logged_model("g1"), evidence(0.70, 0.20, None), WHO)
    ops.promote(loaded, reg, WHO)
    # Better ROC AUC, but PR AUC 0.05 below the champion's (guard: 0.02).
    ops.register(reg, store.logged_model("g2"), evidence(0.80, 0.15, (0.70, 0.20), "1"), WHO)
    assert "guard pr_auc 0.1500 is worse than the champion's 0.2000" in ops.promote(loaded, reg, WHO).reason
    failed = ops.Evidence({"passed": False, "metrics": {}, "champion_version": "1"})
    ops.register(reg, store.logged_model("g3"), failed, WHO)
    assert "its model tests failed" in ops.promote(loaded, reg, WHO).reason
    assert reg.aliases()["champion"] == "1"


def test_bad_versions_names_and_missing_models_are_clear_errors(store: SimpleNamespace, tmp_path: Path) -> None:
    loaded = project(tmp_path, "absent-model")
    with pytest.raises(InputError, match="registered model 'absent-model' does not exist"):
        ops.promote(loaded, registry(store, "absent-model"), WHO)
    reg = registry(store, "versions")
    ops.register(reg, store.logged_model("v1"), evidence(0.7, 0.1, None), WHO)
    with pytest.raises(InputError, match="versions has no version '42'"):
        ops.rollback(reg, WHO, "why", version="42")
    with pytest.raises(InputError, match="no logged model"):
        ops.register(reg, "models:/m-0000000000000000000000000000dead", ops.Evidence(), WHO)
    with pytest.raises(ConfigError, match="not usable"):
        registry(store, "it's")


def test_two_promotions_racing_one_moves_the_other_stops(store: SimpleNamespace, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    loaded = project(tmp_path, "racing")
    reg = registry(store, "racing")
    ops.register(reg, store.logged_model("r1"), evidence(0.7, 0.1, None), WHO)
    outcomes: list[str] = []

    def promote_once() -> None:
        own = Registry(
            MlflowClient(tracking_uri=store.uri, registry_uri=store.uri), store.uri, "racing", "mlgate-audit"
        )
        try:
            outcomes.append(ops.promote(loaded, own, WHO).decision)
        except GateFailed as exc:
            outcomes.append(f"stopped: {exc.message}")

    threads = [threading.Thread(target=promote_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes.count("promoted") == 1, outcomes
    other = next(o for o in outcomes if o != "promoted")
    assert other == "unchanged" or "stops without changing anything" in other, outcomes
    assert reg.aliases() == {"challenger": "1", "champion": "1"}
    assert "mlgate.lock" not in store.client.get_registered_model("racing").tags


WRITES = ("POST", "PATCH", "DELETE")


class CuttingProxy:
    """A loopback HTTP proxy in front of the MLflow server that forwards the `cut_after`th write (POST, PATCH or
    DELETE, searches aside), then cuts the connection without an answer and stops answering anything, as a
    server dying mid-operation would (0: never). `writes` lists each write as `METHOD path`."""

    def __init__(self, target: str, cut_after: int = 0) -> None:
        self.target, self.cut_after = target.rstrip("/"), cut_after
        self.writes: list[str] = []
        self.down = False
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.down:
                    self.close_connection = True
                    return
                path = self.path.split("?", 1)[0]
                write = self.command in WRITES and not path.endswith("/search")
                if write:
                    proxy.writes.append(f"{self.command} {path.split('/api/2.0/mlflow/', 1)[-1]}")
                request = urllib.request.Request(
                    proxy.target + self.path,
                    data=body or None,
                    method=self.command,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, payload = answer.status, answer.read()
                except urllib.error.HTTPError as error:
                    status, payload = error.code, error.read()
                if write and len(proxy.writes) == proxy.cut_after:
                    proxy.down = True  # the write landed; its answer never comes
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = forward

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from mlgate.localci.mlflow_server import MlflowServer

    running = MlflowServer(tmp_path_factory.mktemp("server")).start()
    try:
        yield running.uri
    finally:
        running.stop()


def cli(*args: str, uri: str, config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_"))}
    environ.update(MLGATE_MLFLOW_ATTEMPTS="1", MLGATE_MLFLOW_BACKOFF_S="0.1", **env)
    return subprocess.run(
        [str(MLGATE), "registry", *args, "--config", str(config), "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environ,
    )


PASSED = {"mlgate.model_tests.passed": "true", "mlgate.model_tests.champion_version": "1"}
BETTER = json.dumps({"candidate": {"roc_auc": 0.9, "pr_auc": 0.2}, "champion": {"roc_auc": 0.8, "pr_auc": 0.2}})
BEFORE = {
    "promote": {"challenger": "2", "champion": "1"},
    "rollback": {"challenger": "2", "champion": "2", "previous": "1"},
}
AFTER = {
    "promote": {"challenger": "2", "champion": "2", "previous": "1"},
    "rollback": {"challenger": "2", "champion": "1"},
}
RECOVERER = Who("carol")


def seed(server: str, name: str, operation: str) -> Any:
    """`name` with versions 1 and 2 (2 beats 1 on the same rows) and the aliases before `operation`."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server, registry_uri=server)
    found = client.get_experiment_by_name("seeds")
    experiment = found.experiment_id if found else client.create_experiment("seeds")
    if client.get_experiment_by_name("mlgate-audit") is None:  # so that each operation makes the same writes
        client.create_experiment("mlgate-audit")
    client.create_registered_model(name)
    for _ in range(2):
        run = client.create_run(experiment)
        model = client.create_logged_model(experiment, source_run_id=run.info.run_id)
        client.create_model_version(
            name,
            f"models:/{model.model_id}",
            model_id=model.model_id,
            tags={**PASSED, "mlgate.metrics": BETTER},
            await_creation_for=0,
        )
    for alias, version in BEFORE[operation].items():
        client.set_registered_model_alias(name, alias, version)
    return client


def state_of(client: Any, name: str, operation: str) -> str:
    model = client.get_registered_model(name)
    aliases = {str(k): str(v) for k, v in dict(model.aliases or {}).items()}
    left = sorted(
        tag.removeprefix("mlgate.") for tag in dict(model.tags or {}) if tag in ("mlgate.lock", "mlgate.intent")
    )
    where = "before" if aliases == BEFORE[operation] else "after" if aliases == AFTER[operation] else f"HALF {aliases}"
    return where + (f" +{'+'.join(left)}" if left else "")


def run_operation(operation: str, loaded: Any, registry: Registry, again: bool = False) -> ops.Decision:
    if operation == "promote":
        return ops.promote(loaded, registry, WHO, version="2" if again else None)
    return ops.rollback(registry, WHO, "p99 doubled", version="1" if again else None)


@pytest.mark.parametrize("operation", ["promote", "rollback"])
def test_a_server_dying_after_any_write_of_an_operation_heals_on_the_next_one(
    server: str, tmp_path: Path, operation: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlgate.registry
    from mlflow import MlflowClient

    monkeypatch.setattr(mlgate.registry, "LOCK_SETTLE_S", 0.0)
    monkeypatch.setenv("MLGATE_MLFLOW_ATTEMPTS", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    healthy = MlflowClient(tracking_uri=server, registry_uri=server)
    loaded = project(tmp_path, "unused")

    # Every write the operation makes, in order, from one run that nothing interrupts.
    seed(server, f"{operation}-count", operation)
    with CuttingProxy(server) as counting:
        name = f"{operation}-count"
        client = MlflowClient(tracking_uri=counting.url, registry_uri=counting.url)
        run_operation(operation, loaded, Registry(client, counting.url, name, "mlgate-audit"))
    writes = counting.writes
    assert writes[0].endswith("registered-models/set-tag") and writes[-1].endswith("registered-models/delete-tag")
    assert sum("registered-models/alias" in w for w in writes) == 2, writes

    audit_at = next(i for i, w in enumerate(writes, 1) if w.endswith("runs/create"))
    rows = []
    for position in range(1, len(writes) + 1):
        name = f"{operation}-{position}"
        seed(server, name, operation)
        with CuttingProxy(server, cut_after=position) as proxy:
            client = MlflowClient(tracking_uri=proxy.url, registry_uri=proxy.url)
            try:
                run_operation(operation, loaded, Registry(client, proxy.url, name, "mlgate-audit"))
                said = "finished"
            except ToolError as exc:
                said = f"{exc.message} hint: {exc.hint}"
        assert proxy.down, position  # the cut happened
        fault = state_of(healthy, name, operation)  # while the server is down: may be half-moved
        assert "by hand" not in said and "Traceback" not in said, said
        # The next operation on a server that answers again: `registry status`, or the same operation re-run.
        registry = Registry(healthy, server, name, "mlgate-audit")
        lines: list[str] = []
        if position % 2:
            ops.status(registry, RECOVERER, say=lines.append)
        else:
            with monkeypatch.context() as quiet:
                quiet.setattr(mlgate.registry, "_say", lines.append)
                again = run_operation(operation, loaded, registry, again=True)
            assert again.decision == "unchanged", again.reason
        healed = state_of(healthy, name, operation)
        trail = [(r.decision, r.reason.startswith("recovered:")) for r in ops.history(registry)]
        finished = [t for t in trail if t[0] != "unchanged"]
        if position == 1:  # the lock landed, nothing else: nothing moved, no intent, the lock waits out its time
            assert fault == healed == "before +lock" and finished == [], (fault, healed, trail)
        else:
            assert healed == "after", (position, writes[position - 1], fault, healed, lines)
            assert len(finished) == 1, trail  # one record: the operation's own, or the recovery's
            # Cut before its audit record landed: the recovery finishes it and records it as recovered; after,
            # the record is the operation's own and the recovery only clears what it left.
            recovered = finished[0][1]
            assert recovered == (position < audit_at), (position, trail)
            if said != "finished":
                assert any(w in said for w in ("is recorded on", "done and in the audit log", "no alias was moved"))
            if recovered:
                assert any("recorded it as recovered" in line for line in lines), lines
        outcome = said.split(" hint:", 1)[0].rsplit("; ", 1)[-1] if said != "finished" else said
        rows.append(f"| {operation} | {position} | {writes[position - 1]} | {outcome} | {fault} | {healed} |")
    with capsys.disabled():
        print(f"\n{operation}: fault after each write, then one recovery")
        print("\n".join(rows))


def test_a_promote_cut_after_its_first_alias_write_says_so_and_registry_status_finishes_it(
    server: str, tmp_path: Path
) -> None:
    client = seed(server, "cut-cli", "promote")
    config = tmp_path / "mlgate.yaml"
    config.write_text(CONFIG.format(model="cut-cli"))
    with CuttingProxy(server, cut_after=3) as proxy:  # the lock, the intent, @previous: then nothing answers
        done = cli("promote", uri=proxy.url, config=config)
    said = done.stdout + done.stderr
    assert done.returncode == 4 and "Traceback" not in said and "by hand" not in said, said
    assert "the intended move (@challenger 2, @champion 1 -> @challenger 2, @champion 2, @previous 1)" in said, said
    assert "`mlgate registry status`" in said, said
    assert state_of(client, "cut-cli", "promote").startswith("HALF")

    done = cli("status", uri=server, config=config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "found an unfinished promote of version 2 by " in done.stdout, done.stdout
    assert "finished it (@champion 1 -> 2) and recorded it as recovered" in done.stdout, done.stdout
    assert state_of(client, "cut-cli", "promote") == "after"
    last = ops.history(Registry(client, server, "cut-cli", "mlgate-audit"))[-1]
    assert (last.operation, last.decision) == ("promote", "promoted") and last.reason.startswith("recovered: ")
