"""`mlgate rollout` for real: nginx in front of two `mlgate serve`, models logged to and registered in MLflow,
client load throughout. Three bad challengers (one that errors on a share of requests, one that is slow, one
whose scores are shifted but never errors) are each rolled back at the first step with the right reason and
the registry untouched; a good one survives a second rollout being refused, its controller being killed
mid-step and recovered by `abort`, then is promoted through every step. No weight change and no rollback
fails a request: the only errors the clients see are the erroring model's own."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed: `make venv` installs it (apt-get install -y nginx)"
)

import pandas as pd  # noqa: E402
import rollout_models  # noqa: E402
from mlgate.config import load_config  # noqa: E402
from mlgate.registry import Registry  # noqa: E402
from mlgate.registry.audit import Who  # noqa: E402
from mlgate.statefile import alive, command_line, free_port, read_state  # noqa: E402
from rollout_models import outcome  # noqa: E402

MLGATE = Path(sys.executable).parent / "mlgate"
ROWS = pd.DataFrame({"amount": [480.75, 12.5], "velocity": [4.0, 1.0]})
WHO = Who("alice", ["bob"], "", "c0ffee", "o/r", "production")
BOUND_S = 240  # bounds for a stuck process, not timing assertions
CONFIG = """\
version: 1
project: fraud
registry:
  model: fraud
  promotion: {{ metric: roc_auc, margin: 0.0 }}
traffic:
  nginx: {{ listen_port: {port} }}
rollout:
  profile: test
  steps: [20, 50, 100]
  bake_s: 3
  deadline_s: 40
  # This machine runs the two servers beside the load and the suite: their latencies differ by more than
  # the production default (1.5x) for reasons of their own; the slow challenger is 10x and more.
  thresholds: {{ min_samples: 40, max_latency_ratio: 4 }}
"""


@dataclass
class World:
    root: Path
    config: Path
    uri: str
    port: int
    versions: dict[str, str]
    registry: Registry

    def mlgate(
        self, *argv: str, timeout: float = BOUND_S, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MLGATE), *argv, "--config", str(config or self.config), "--tracking-uri", self.uri],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(MLGATE), *argv, "--config", str(self.config), "--tracking-uri", self.uri],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip

    def state(self) -> dict[str, Any]:
        return read_state(self.root / ".mlgate" / "rollout" / "state.json") or {}

    def split(self) -> dict[str, Any]:
        found = read_state(self.root / ".mlgate" / "traffic" / "state.json") or {}
        return dict(found.get("split") or {})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """`fraud` v1 (good, @champion), then v2 good, v3 erroring, v4 slow, v5 shifted, each registered with passing
    model-test evidence (the canary is what catches what offline tests missed)."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("rollout")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    mlflow.set_tracking_uri(uri)  # registering resolves models:/ sources through the global URI
    mlflow.set_registry_uri(uri)
    registry = Registry(client, uri, "fraud", "mlgate-audit")
    port = free_port()
    config = root / "mlgate.yaml"
    config.write_text(CONFIG.format(port=port), encoding="utf-8")
    loaded = load_config(config)
    versions = rollout_models.register_challengers(registry, loaded, WHO, ROWS, rollout_models.KINDS)
    yield World(root, config, uri, port, versions, registry)


@dataclass
class Load:
    """Clients posting one row each to nginx until stopped (bounded in time and count), recording each outcome."""

    port: int
    clients: int = 6
    outcomes: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def post(self, rng: random.Random) -> str:
        row = {"amount": round(rng.uniform(1.0, 1000.0), 2), "velocity": float(rng.randint(0, 20))}
        return outcome(self.port, json.dumps({"dataframe_records": [row]}).encode())

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        deadline = time.monotonic() + BOUND_S
        for _ in range(50_000):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            self.outcomes[self.post(rng)] += 1

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.client, args=(seed,), daemon=True) for seed in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def switch_failures(self) -> dict[str, int]:
        return {outcome: n for outcome, n in self.outcomes.items() if outcome not in ("ok", "model error")}


@contextmanager
def stack(world: World, canary: str) -> Iterator[None]:
    """The nginx stack: @champion stable, version `canary` as the canary at weight 0."""
    up = world.mlgate("traffic", "up", "--stable", "models:/fraud@champion", "--canary", f"models:/fraud/{canary}")
    state = read_state(world.root / ".mlgate" / "traffic" / "state.json")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        state = read_state(world.root / ".mlgate" / "traffic" / "state.json") or state
        world.mlgate("traffic", "down", timeout=120)
        for pid in [int((state or {}).get("nginx", {}).get("pid") or 0)] + [
            int(upstream.get("pid") or 0) for upstream in ((state or {}).get("upstreams") or {}).values()
        ]:  # the safety net: by pid, only if it still runs what was started there
            if pid and alive(pid) and ("nginx" in command_line(pid) or "mlgate" in command_line(pid)):
                os.killpg(pid, signal.SIGKILL)


def said(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr  # the error line is an annotation on stdout; its hint on stderr


def version_tags(world: World, version: str) -> dict[str, str]:
    return dict(world.registry.client.get_model_version("fraud", version).tags or {})


@pytest.mark.parametrize(
    ("kind", "metrics"),
    [
        ("erroring", {"error_rate", "error_rate_vs_stable"}),
        ("slow", {"latency_vs_stable"}),
        ("shifted", {"score_psi", "score_ks"}),
    ],
)
def test_a_bad_challenger_is_rolled_back_at_the_first_step_and_the_registry_is_untouched(
    world: World, kind: str, metrics: set[str], tmp_path: Path
) -> None:
    version = world.versions[kind]
    before = world.registry.aliases()
    record_path = tmp_path / "record.json"
    with stack(world, version), Load(world.port) as load:
        done = world.mlgate("rollout", "start", "--version", version, "--record", str(record_path))
        split = world.split()
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"error: rollout of version {version} rolled-back: step 20%: " in said(done)
    record = json.loads(record_path.read_text())
    assert record["outcome"] == "rolled-back" and len(record["steps"]) == 1, record["reason"]
    failed = {check["metric"] for check in record["steps"][0]["analyses"][-1]["checks"] if check["verdict"] == "fail"}
    assert failed & metrics, (failed, record["reason"])
    assert split == {"stable": 100, "canary": 0, "mirror": False}
    assert world.registry.aliases() == before  # @champion, @challenger as they were
    tags = version_tags(world, version)
    assert tags["mlgate.audit.rollout.decision"] == "rolled-back"
    assert load.switch_failures() == {}, load.outcomes
    assert load.outcomes["ok"] > 100
    if kind == "erroring":
        assert load.outcomes["model error"] > 0  # the canary's own failures reached clients, and were counted
    else:
        assert load.outcomes["model error"] == 0


def test_a_shadow_step_pairs_the_mirror_copies_and_rolls_back_shifted_scores_before_any_client_meets_them(
    world: World, tmp_path: Path
) -> None:
    """nginx mirrors every request to the canary; both servers' answers, joined on the request id, show the shift."""
    version = world.versions["shifted"]
    shadow = world.config.with_name("mlgate-shadow.yaml")
    shadow.write_text(world.config.read_text().replace("  profile: test\n", "  profile: test\n  shadow: true\n"))
    record_path = tmp_path / "record.json"
    with stack(world, version), Load(world.port) as load:
        done = world.mlgate("rollout", "start", "--version", version, "--record", str(record_path), config=shadow)
        split = world.split()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step shadow: stable 100% / canary 0%, mirror on" in said(done)
    record = json.loads(record_path.read_text())
    assert [step["name"] for step in record["steps"]] == ["shadow"], record["reason"]
    last = record["steps"][0]["analyses"][-1]
    assert last["pairs"]["pairs"] >= 40
    failed = {check["metric"]: check for check in last["checks"] if check["verdict"] == "fail"}
    assert "shadow_score_diff" in failed, (failed, record["reason"])
    # +0.3 on every score, less where the clip at 1 cuts it: the largest difference is the shift itself.
    assert re.search(
        r"the paired scores differ by 0\.[23]\d\d on average \(largest 0\.300\)", failed["shadow_score_diff"]["reason"]
    )
    assert split == {"stable": 100, "canary": 0, "mirror": False}
    assert load.switch_failures() == {} and load.outcomes["model error"] == 0, load.outcomes


def test_a_good_challenger_survives_a_dead_controller_then_is_promoted_step_by_step(world: World) -> None:
    version = world.versions["good"]
    with stack(world, version), Load(world.port) as load:
        first = world.popen("rollout", "start", "--version", version)
        try:
            deadline = time.monotonic() + BOUND_S
            while (world.state().get("step") or {}).get("canary") != 50:  # the second step is baking
                assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.stdout else ""
                time.sleep(0.2)
            rollout_id = world.state()["id"]
            second = world.mlgate("rollout", "start", "--version", version)
            assert second.returncode == 3 and f"a rollout is already running: rollout {rollout_id}" in said(second)
            os.killpg(first.pid, signal.SIGKILL)  # the runner died mid-step: no cleanup of its own
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(timeout=30)
        assert world.split()["canary"] >= 50  # left where the dead controller put it (it may have reached 100)
        refused = world.mlgate("rollout", "start", "--version", version)
        assert refused.returncode == 3 and "interrupted and never finished" in said(refused)
        recovered = world.mlgate("rollout", "abort", "--reason", "the runner was lost")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert world.split() == {"stable": 100, "canary": 0, "mirror": False}
        assert world.state()["phase"] == "aborted" and "recovered from the state file" in world.state()["reason"]
        assert world.registry.aliases()["champion"] == world.versions["champion"]
        status = world.mlgate("rollout", "status")
        assert f"rollout {rollout_id}: aborted" in status.stdout and "stable 100% / canary 0%" in status.stdout
        promoted = world.mlgate("rollout", "start", "--version", version)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    record = world.state()
    assert record["outcome"] == "promoted"
    assert [step["verdict"] for step in record["steps"]] == ["pass", "pass", "pass"]
    assert world.registry.aliases()["champion"] == version
    assert version_tags(world, version)["mlgate.audit.rollout.decision"] == "promoted"
    assert load.switch_failures() == {}, load.outcomes
    assert load.outcomes["model error"] == 0
