"""`train.distributed`: the launch plan (processes by device, the count of GPUs checked at once), torchrun's
command line, the overrides of the command line, and real two-process Gloo runs of a small rank-aware training
script through `mlgate train` against a real MLflow store (sqlite): rank 0 alone logs, the lineage has the
world size and every rank's device, the repro check holds, and a rank that raises ends the whole launch with
the run FAILED, that rank's last lines, and no process left behind."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from mlgate.commands.train import with_distributed_overrides
from mlgate.config import DistributedConfig, load_config
from mlgate.errors import ConfigError, GateFailed, InputError, ToolError
from mlgate.train import distributed, train
from mlgate.train.device import DeviceInfo

TRAIN_SCRIPT = """
import os, sys, time
import mlflow
import torch
from mlgate_runtime import setup

class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0.5] * len(model_input)

ctx = setup()
with open(os.path.join(ctx.param("pids"), f"rank{ctx.rank}.pid"), "w") as handle:
    handle.write(str(os.getpid()))
# Each rank draws from its own seed; the sum over ranks is what rank 0 logs (a reduce every rank joins).
draw = float(torch.rand(1).item())
total = ctx.reduce(draw, op="sum")
if ctx.param("crash_rank") == ctx.rank:
    print(f"rank {ctx.rank}: loading shard", flush=True)
    raise ValueError(f"rank {ctx.rank}: column amount is missing in shard {ctx.rank}")
if ctx.param("crash_rank") is not None:
    time.sleep(60)  # the healthy ranks wait; torchrun must stop them
if ctx.is_main:
    with mlflow.start_run():
        for epoch in range(2):
            mlflow.log_metric("train_loss", 1.0 / (epoch + 1), step=epoch)
        mlflow.log_metric("holdout_auc", round(total, 6))
        mlflow.log_metric("world_size_seen", ctx.world_size)
        mlflow.log_metric("seed_seen", ctx.seed)
        mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"])
print(f"rank {ctx.rank} of {ctx.world_size} seed {ctx.seed} backend {ctx.backend} device {ctx.device}")
"""

CONFIG = """version: 1
project: stub
train:
  command: {command}
  profiles:
    quick: {{pids: {pids}}}
    crash: {{pids: {pids}, crash_rank: 1}}
  seed: 7
  device: cpu
  metrics: [holdout_auc]
  distributed: {distributed}
"""


def cpu_info() -> DeviceInfo:
    return DeviceInfo(python="3.11", torch="2.13.0", cuda_available=False, torch_cuda=None, device_count=0)


def gpu_info(count: int) -> DeviceInfo:
    gpus: list[dict[str, object]] = [{"name": "NVIDIA H100", "memory_gib": 80.0, "capability": "9.0"}] * count
    return DeviceInfo(
        python="3.11", torch="2.13.0", cuda_available=True, torch_cuda="12.8", device_count=count, gpus=gpus,
        chosen="cuda",
    )  # fmt: skip


def test_auto_takes_every_gpu_with_nccl_and_falls_back_to_one_process_without_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    launch = distributed.plan(DistributedConfig(), gpu_info(4), require_gpu=True)
    assert launch is not None and (launch.nproc_per_node, launch.world_size, launch.backend) == (4, 4, "nccl")
    assert distributed.plan(DistributedConfig(), cpu_info(), require_gpu=False) is None
    assert "auto: no GPU visible, so one process" in capsys.readouterr().out
    cpu = distributed.plan(DistributedConfig(nproc_per_node=2), cpu_info(), require_gpu=False)
    assert cpu is not None and (cpu.world_size, cpu.backend) == (2, "gloo")
    assert distributed.plan(None, gpu_info(2), require_gpu=False) is None


def test_a_project_without_torch_cannot_be_distributed() -> None:
    no_torch = DeviceInfo(python="3.11", torch=None, cuda_available=False, torch_cuda=None, device_count=0)
    with pytest.raises(ToolError, match="the project environment has no torch"):
        distributed.plan(DistributedConfig(nproc_per_node=2), no_torch, require_gpu=False)


def test_more_processes_than_gpus_fails_at_once_with_the_count_seen() -> None:
    with pytest.raises(ToolError, match=r"asks for 3 processes.*require-gpu is true.*but 2 GPU\(s\) are visible"):
        distributed.plan(DistributedConfig(nproc_per_node=3), gpu_info(2), require_gpu=True)


def test_the_command_goes_through_torchrun_with_the_same_interpreter(tmp_path: Path) -> None:
    (tmp_path / "mlgate.yaml").write_text("version: 1\nproject: p\ntrain:\n  command: x\n  profiles: {quick: {}}\n")
    loaded = load_config(tmp_path / "mlgate.yaml")
    one_node = distributed.Launch(2, 1, 0, "gloo", None, "42-1", "")
    found = distributed.command(loaded, ["python", "-m", "fraud.train", "--data-dir", "d"], one_node, tmp_path)
    assert found[:3] == ["python", "-m", "torch.distributed.run"]
    assert found[-4:] == ["-m", "fraud.train", "--data-dir", "d"]
    assert {"--nproc-per-node=2", "--nnodes=1", "--standalone", "--max-restarts=0", "--tee=3"} <= set(found)
    script = distributed.command(loaded, ["/opt/venv/bin/python3.11", "train.py", "--fast"], one_node, tmp_path)
    assert script[0] == "/opt/venv/bin/python3.11" and script[-2:] == ["train.py", "--fast"]
    other = distributed.command(loaded, ["bash", "train.sh"], one_node, tmp_path)
    assert other[-3:] == ["--no-python", "bash", "train.sh"]
    two_nodes = distributed.Launch(8, 2, 1, "nccl", "10.0.0.5:29400", "77-2", "")
    multi = distributed.command(loaded, ["python", "train.py"], two_nodes, tmp_path)
    assert {"--nnodes=2", "--node-rank=1", "--rdzv-backend=static", "--rdzv-endpoint=10.0.0.5:29400"} <= set(multi)
    assert "--rdzv-id=77-2" in multi and "--standalone" not in multi
    with pytest.raises(ConfigError, match=r"interpreter option '-u'"):
        distributed.command(loaded, ["python", "-u", "train.py"], one_node, tmp_path)


def _args(**given: str | None) -> argparse.Namespace:
    base = {"distributed": None, "nnodes": None, "node_rank": None, "rdzv_endpoint": None, "rdzv_id": None}
    return argparse.Namespace(**(base | given))


def test_overrides_of_the_command_line_are_validated_like_the_config(tmp_path: Path) -> None:
    (tmp_path / "mlgate.yaml").write_text(
        "version: 1\nproject: p\ntrain:\n  command: x\n  profiles: {quick: {}}\n  distributed: auto\n"
    )
    loaded = load_config(tmp_path / "mlgate.yaml")
    assert loaded.model.train is not None and loaded.model.train.distributed == DistributedConfig()
    two = with_distributed_overrides(loaded, _args(distributed="2")).model.train
    assert two is not None and two.distributed == DistributedConfig(nproc_per_node=2)
    none = with_distributed_overrides(loaded, _args(distributed="none")).model.train
    assert none is not None and none.distributed is None
    nodes = with_distributed_overrides(loaded, _args(nnodes="2", node_rank="1", rdzv_endpoint="h:29400")).model.train
    assert nodes is not None and nodes.distributed is not None and nodes.distributed.node_rank == 1
    with pytest.raises(InputError, match="rdzv_endpoint"):
        with_distributed_overrides(loaded, _args(nnodes="2"))
    with pytest.raises(InputError, match="'all' is none of"):
        with_distributed_overrides(loaded, _args(distributed="all"))
    with pytest.raises(InputError, match="--node-rank 'x' is not a whole number"):
        with_distributed_overrides(loaded, _args(node_rank="x"))
    with pytest.raises(InputError, match="--distributed none with --nnodes"):
        with_distributed_overrides(loaded, _args(distributed="none", nnodes="2"))


def test_a_dvc_stage_cannot_be_distributed(tmp_path: Path) -> None:
    (tmp_path / "mlgate.yaml").write_text(
        "version: 1\nproject: p\ntrain:\n  stage: train\n  profiles: {quick: {}}\n  distributed: 2\n"
    )
    with pytest.raises(ConfigError, match=r"train\.distributed needs train\.command"):
        load_config(tmp_path / "mlgate.yaml")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pids").mkdir(parents=True)
    (root / "train_stub.py").write_text(TRAIN_SCRIPT)
    (root / "mlgate.yaml").write_text(
        CONFIG.format(command=f"{sys.executable} train_stub.py", pids=root / "pids", distributed=2)
    )
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    return root


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts under ./mlruns
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_two_gloo_processes_log_once_from_rank_0_and_reproduce(project: Path, store: str) -> None:
    from mlflow import MlflowClient

    report = train(load_config(project / "mlgate.yaml"), profile="quick", tracking_uri=store, repro_check=True)
    assert report.repro_checked and not report.repro_differences
    client = MlflowClient(store)
    first, second = (client.get_run(run.run_id) for run in report.runs)
    for run in (first, second):
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1]  # once, by rank 0
        assert run.data.metrics["world_size_seen"] == 2 and run.data.metrics["seed_seen"] == 7  # rank 0: seed + 0
        tags = run.data.tags
        assert tags["mlgate.distributed.world_size"] == "2"
        assert (tags["mlgate.distributed.nnodes"], tags["mlgate.distributed.nproc_per_node"]) == ("1", "2")
        assert tags["mlgate.distributed.backend"] == "gloo"
        devices = json.loads(tags["mlgate.distributed.devices"])
        assert sorted(line.split(":")[0] for host in devices.values() for line in host) == ["rank 0", "rank 1"]
    # Only the gate's two runs exist: no rank opened one of its own.
    assert len(client.search_runs([first.info.experiment_id])) == 2
    # rank 1 drew from its own seed (8): the sum differs from twice rank 0's draw, and is the same both times.
    assert first.data.metrics["holdout_auc"] == second.data.metrics["holdout_auc"]
    model = client.get_logged_model(str(report.main.model_id))
    assert model.tags["mlgate.distributed.world_size"] == "2"
    ranks = [a.path for a in client.list_artifacts(first.info.run_id, "mlgate")]
    assert "mlgate/ranks" in ranks


def test_a_rank_that_raises_ends_the_launch_marks_the_run_failed_and_leaves_no_process(
    project: Path, store: str
) -> None:
    from mlflow import MlflowClient

    loaded = load_config(project / "mlgate.yaml")
    with pytest.raises(GateFailed) as failed:
        train(loaded, profile="crash", tracking_uri=store)
    message = failed.value.message
    assert "rank 1 (local rank 1) exit code 1" in message
    assert "ValueError: rank 1: column amount is missing in shard 1" in message
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("stub").experiment_id])
    assert run.info.status == "FAILED"
    assert "column amount is missing" in run.data.tags["mlgate.failure"]
    pids = [int(path.read_text()) for path in (project / "pids").glob("rank*.pid")]
    assert len(pids) == 2
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"ranks left running: {alive}"


def test_two_nodes_meet_at_node_0_which_alone_opens_the_run(project: Path, store: str) -> None:
    """Two `mlgate train` gates, as two runners would run them, one process each, meeting on loopback."""
    import socket

    from mlflow import MlflowClient

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = [sys.executable, "-m", "mlgate.cli", "train", "--config", str(project / "mlgate.yaml")]
    base += ["--tracking-uri", store, "--distributed", "1", "--nnodes", "2"]
    base += ["--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t-1"]
    outputs = [project.parent / f"node{rank}.out" for rank in (0, 1)]
    client = MlflowClient(store)
    experiment_id = client.create_experiment("stub")  # the store made once, before two gates open it at once
    nodes = []
    try:
        for rank in (0, 1):
            command = [*base, "--node-rank", str(rank), "--outputs-file", str(outputs[rank])]
            nodes.append(
                subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        logs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:  # a node left waiting at the rendezvous (torchrun's own timeout is 10 minutes)
            if node.poll() is None:
                for child in psutil.Process(node.pid).children(recursive=True):
                    child.kill()
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n----\n".join(log[-3000:] for log in logs)
    (run,) = client.search_runs([experiment_id])
    tags = run.data.tags
    assert (tags["mlgate.distributed.nnodes"], tags["mlgate.distributed.world_size"]) == ("2", "2")
    assert tags["mlgate.distributed.rdzv_id"] == "t-1"
    assert run.data.metrics["world_size_seen"] == 2
    assert json.loads(outputs[0].read_text())["run-id"] == run.info.run_id
    assert json.loads(outputs[1].read_text())["run-id"] == ""  # node 1 trained without a run of its own


def test_the_runtime_reads_its_place_from_torchrun_and_shares_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(distributed.__file__).resolve().parents[1] / "_runtime"))
    import mlgate_runtime

    for name, value in {"MLGATE_SEED": "100", "MLGATE_DEVICE": "cuda", "RANK": "5", "LOCAL_RANK": "1",
                        "WORLD_SIZE": "8", "MLGATE_DIST_BACKEND": "nccl"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    ctx = mlgate_runtime.context()
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main, ctx.distributed) == (5, 1, 8, False, True)
    assert (ctx.seed, ctx.base_seed, ctx.device, ctx.backend) == (105, 100, "cuda:1", "nccl")
    # The sampler needs no process group: every rank the same seeded permutation, each its own eighth of it.
    shares = [
        list(
            mlgate_runtime.TrainContext("p", 100 + r, "cpu", False, base_seed=100, rank=r, world_size=8).sampler(
                range(80)
            )
        )
        for r in range(8)
    ]
    assert all(len(share) == 10 for share in shares)
    assert sorted(row for share in shares for row in share) == list(range(80))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MLGATE_DIST_BACKEND"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLGATE_DEVICE", "cpu")
    alone = mlgate_runtime.context()
    assert (alone.rank, alone.world_size, alone.is_main, alone.seed, alone.backend) == (0, 1, True, 100, "")
    assert alone.reduce(2.5, op="sum") == 2.5 and alone.reduce(2.5) == 2.5
    assert list(alone.sampler(range(5), shuffle=False)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="'max'"):
        alone.reduce(1.0, op="max")
    # `train.distributed: 1`: torchrun with one process still joins a group (a DDP smoke test on one GPU).
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MLGATE_DIST_BACKEND": "nccl"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLGATE_DEVICE", "cuda")
    one = mlgate_runtime.context()
    assert (one.world_size, one.distributed, one.backend, one.device) == (1, True, "nccl", "cuda:0")
