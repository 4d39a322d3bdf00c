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
from mlgate.errors import ConfigError, GateFailed, InputError
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


class FlakyProxy:
    """A loopback HTTP proxy in front of the MLflow server that stops answering alias writes after the first
    `allowed` of them, for `outage` requests (then answers again), as a server dying mid-operation would."""

    def __init__(self, target: str, allowed: int, outage: int) -> None:
        self.target, self.allowed, self.outage = target.rstrip("/"), allowed, outage
        self.alias_writes = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/registered-models/alias") and self.command in ("POST", "DELETE"):
                    proxy.alias_writes += 1
                    if proxy.allowed < proxy.alias_writes <= proxy.allowed + proxy.outage:
                        self.send_error(503, "server going down")
                        return
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

    def close(self) -> None:
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
    environ.update(MLGATE_MLFLOW_ATTEMPTS="2", MLGATE_MLFLOW_BACKOFF_S="0.2", **env)
    return subprocess.run(
        [str(MLGATE), "registry", *args, "--config", str(config), "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environ,
    )


def test_a_server_dying_between_two_alias_moves_leaves_the_aliases_as_they_were(server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server, registry_uri=server)
    experiment = client.create_experiment("flaky")
    config = tmp_path / "mlgate.yaml"
    config.write_text(CONFIG.format(model="flaky"))
    uris = []
    for commit in ("f1", "f2"):
        run = client.create_run(experiment, tags={"mlgate.git.commit": commit})
        uris.append(f"models:/{client.create_logged_model(experiment, source_run_id=run.info.run_id).model_id}")
    good = json.dumps({"model_tests": {"passed": True, "metrics": {"candidate": {"roc_auc": 0.7, "pr_auc": 0.1}}}})
    for step in (("register", "--model-uri", uris[0], "--evidence", good), ("promote",)):
        done = cli(*step, uri=server, config=config)
        assert done.returncode == 0, done.stdout + done.stderr
    better = {
        "passed": True,
        "champion_version": "1",
        "metrics": {"candidate": {"roc_auc": 0.8, "pr_auc": 0.1}, "champion": {"roc_auc": 0.7, "pr_auc": 0.1}},
    }
    done = cli(
        "register", "--model-uri", uris[1], "--evidence", json.dumps({"model_tests": better}), uri=server, config=config
    )
    assert done.returncode == 0, done.stdout + done.stderr
    before = {str(k): str(v) for k, v in client.get_registered_model("flaky").aliases.items()}
    assert before == {"challenger": "2", "champion": "1"}

    # The promotion moves @previous, then @champion: the server stops answering after the first move,
    # for longer than the retries (2 attempts), and is back for the undo.
    proxy = FlakyProxy(server, allowed=1, outage=2)
    try:
        done = cli("promote", uri=proxy.url, config=config)
    finally:
        proxy.close()
    assert done.returncode == 4, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "were undone: the aliases are as they were" in said, said
    assert "Traceback" not in said
    after = {str(k): str(v) for k, v in client.get_registered_model("flaky").aliases.items()}
    assert after == before  # nothing half-moved: no @previous, @champion still 1
    assert "mlgate.lock" not in client.get_registered_model("flaky").tags

    # A server that stays down: the undo cannot happen, and the message says exactly what to set by hand.
    proxy = FlakyProxy(server, allowed=1, outage=100)
    try:
        done = cli("promote", uri=proxy.url, config=config)
    finally:
        proxy.close()
    said = done.stdout + done.stderr
    assert done.returncode == 4 and "UNDO FAILED for @previous -> (none)" in said, said
    # Once it answers again, the promotion goes through and the trail has every attempt.
    done = cli("promote", uri=server, config=config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {str(k): str(v) for k, v in client.get_registered_model("flaky").aliases.items()} == {
        "challenger": "2",
        "champion": "2",
        "previous": "1",
    }
    history = cli("history", uri=server, config=config)
    # register, promote, register, two failed promotions (each recorded with its reason), the promotion.
    assert history.returncode == 0 and "flaky: 6 record(s)" in history.stdout, history.stdout
    assert history.stdout.count(" failed ") >= 2, history.stdout
