"""Training on several processes through PyTorch's own launcher, torchrun (`python -m torch.distributed.run`).

mlgate plans the launch (how many processes on this node, the backend by device, the nodes and their
rendezvous), rewrites `train.command` into the torchrun command line, and after a failure names the rank
that failed first with its last lines (torchrun stops every other rank itself: `--max-restarts 0`).
Each rank's output is kept under torchrun's log folder and echoed with its `[default<local rank>]:` prefix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mlgate.config import DistributedConfig, LoadedConfig
from mlgate.errors import ConfigError, ToolError
from mlgate.train.device import DeviceInfo

# torchrun's summary of a failed launch: "rank      : 1 (local_rank: 1)" under "Root Cause (first observed failure)".
_FAILED_RANK = re.compile(r"rank\s*:\s*(?P<rank>\d+)\s*\(local_rank:\s*(?P<local>\d+)\)")
_EXIT_CODE = re.compile(r"exitcode\s*:\s*(?P<code>-?\d+)")
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?$")
LAST_LINES = 20


@dataclass(frozen=True)
class Launch:
    """One node's share of a distributed training run."""

    nproc_per_node: int
    nnodes: int
    node_rank: int
    backend: str  # nccl on CUDA, gloo on CPU
    rdzv_endpoint: str | None  # host:port of node 0 (several nodes)
    rdzv_id: str
    note: str

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def tags(self) -> dict[str, str]:
        """The run's lineage of the launch (the devices that took part are added from the ranks' own report)."""
        return {
            "mlgate.distributed.world_size": str(self.world_size),
            "mlgate.distributed.nnodes": str(self.nnodes),
            "mlgate.distributed.nproc_per_node": str(self.nproc_per_node),
            "mlgate.distributed.backend": self.backend,
            "mlgate.distributed.rdzv_id": self.rdzv_id,
            "mlgate.distributed.launcher": "torchrun",
        }


def default_rdzv_id() -> str:
    run_id = os.environ.get("GITHUB_RUN_ID")
    return f"{run_id}-{os.environ.get('GITHUB_RUN_ATTEMPT', '1')}" if run_id else "mlgate"


def plan(settings: DistributedConfig | None, info: DeviceInfo, require_gpu: bool) -> Launch | None:
    """The launch on this node, or None to start the command once, as without train.distributed (`none`, or
    `auto` on one node with no GPU: said in the log). Asking for more processes than GPUs on CUDA fails at once
    with the count seen: NCCL gives each rank a GPU of its own."""
    if settings is None:
        return None
    if info.torch is None:
        raise ToolError(
            "train.distributed starts the training through torchrun, but the project environment has no torch",
            hint="add torch to environment.install, or set train.distributed: none",
        )
    cuda = info.chosen == "cuda"
    if settings.nproc_per_node == "auto":
        nproc = info.device_count if cuda else 1
        note = (
            f"auto: one process per visible GPU ({nproc} x {info.gpu_name})"
            if cuda
            else "auto: no GPU visible, so one process (train.distributed has nothing to spread over here)"
        )
    else:
        nproc = settings.nproc_per_node
        if cuda and nproc > info.device_count:
            asked = "require-gpu is true" if require_gpu else "the device is CUDA"
            raise ToolError(
                f"train.distributed asks for {nproc} processes on this node, one GPU each ({asked}), but "
                f"{info.device_count} GPU(s) are visible: {', '.join(str(g['name']) for g in info.gpus) or 'none'}",
                hint="set train.distributed to auto (one process per visible GPU) or at most that number, or check "
                "CUDA_VISIBLE_DEVICES on the runner",
            )
        note = f"{nproc} process(es) on {'CUDA' if cuda else 'the CPU'}"
    if settings.nproc_per_node == "auto" and nproc * settings.nnodes == 1:
        print(f"mlgate train: {note}", flush=True)
        return None  # an explicit 1 still goes through torchrun: the project asked for the launcher
    return Launch(
        nproc_per_node=nproc,
        nnodes=settings.nnodes,
        node_rank=settings.node_rank,
        backend="nccl" if cuda else "gloo",
        rdzv_endpoint=settings.rdzv_endpoint,
        rdzv_id=settings.rdzv_id or default_rdzv_id(),
        note=note if settings.nnodes == 1 else f"{note}, node {settings.node_rank} of {settings.nnodes}",
    )


def command(loaded: LoadedConfig, words: list[str], launch: Launch, log_dir: Path) -> list[str]:
    """train.command as torchrun's command line: `python [-m] X args` becomes `python -m torch.distributed.run
    <options> [-m] X args` with the same interpreter (the project venv's `python` on PATH); any other program
    runs under `--no-python`."""
    options = [
        f"--nproc-per-node={launch.nproc_per_node}",
        f"--nnodes={launch.nnodes}",
        "--max-restarts=0",  # a crashed rank ends the job: no silent restart of a half-trained run
        f"--log-dir={log_dir}",
        "--tee=3",  # each rank's stdout and stderr both to its log file and to the console
    ]
    if launch.nnodes == 1:
        options.append("--standalone")
    else:
        options += [
            f"--node-rank={launch.node_rank}",
            "--rdzv-backend=static",  # ranks follow node_rank: global rank 0 is on node 0, which opens the run
            f"--rdzv-endpoint={launch.rdzv_endpoint}",
            f"--rdzv-id={launch.rdzv_id}",
        ]
    if _PYTHON.fullmatch(Path(words[0]).name):
        rest = words[1:]
        if rest and rest[0].startswith("-") and rest[0] != "-m":
            raise ConfigError(
                f"{loaded.path}: train.command passes the interpreter option {rest[0]!r}, which torchrun cannot "
                "forward (train.distributed)",
                hint="drop it, or set it in the environment (e.g. PYTHONUNBUFFERED=1 for -u)",
                file=str(loaded.path),
                line=loaded.line_of("train", "command") or loaded.line_of("train"),
            )
        return [words[0], "-m", "torch.distributed.run", *options, *rest]
    return ["python", "-m", "torch.distributed.run", *options, "--no-python", *words]


def environment(launch: Launch, devices_file: Path) -> dict[str, str]:
    """What mlgate_runtime.setup() reads in each rank besides torchrun's own RANK, LOCAL_RANK, WORLD_SIZE."""
    return {"MLGATE_DIST_BACKEND": launch.backend, "MLGATE_DIST_DEVICES": str(devices_file)}


def devices(devices_file: Path) -> list[dict[str, object]]:
    """Every rank's host and device as rank 0 recorded them at setup; empty when the code never called setup()."""
    try:
        found = json.loads(devices_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def device_tags(found: list[dict[str, object]]) -> dict[str, str]:
    """Each node's devices as the ranks reported them, e.g. {"runner-1": ["cuda:0 NVIDIA H100", ...]}."""
    by_host: dict[str, list[str]] = {}
    for item in sorted(found, key=lambda i: int(str(i.get("rank", 0)))):
        by_host.setdefault(str(item.get("host")), []).append(f"rank {item.get('rank')}: {item.get('device')} "
                                                             f"{item.get('name')}")  # fmt: skip
    return {"mlgate.distributed.devices": json.dumps(by_host)[:5000]} if by_host else {}


@dataclass(frozen=True)
class RankFailure:
    rank: int
    local_rank: int
    exit_code: int | None
    last_lines: list[str]


def failed_rank(console_tail: list[str], log_dir: Path) -> RankFailure | None:
    """The rank torchrun reports as the first failure, with the last lines of its own stderr (else stdout) log."""
    text = "\n".join(console_tail)
    # The "Root Cause (first observed failure)" section; the "Failures" listed before it are the ranks torchrun
    # stopped (SIGTERM) because of it.
    section = text[text.rfind("Root Cause") :] if "Root Cause" in text else text
    found = _FAILED_RANK.search(section)
    if not found:
        return None
    rank, local = int(found["rank"]), int(found["local"])
    code = _EXIT_CODE.search(section[found.end() :])
    lines: list[str] = []
    for name in ("stderr.log", "stdout.log"):
        # <log_dir>/<rdzv run id>_<random>/attempt_0/<local rank>/stderr.log (torchrun's layout)
        for path in sorted(log_dir.glob(f"*/attempt_*/{local}/{name}")):
            lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if lines:
            break
    return RankFailure(rank, local, int(code["code"]) if code else None, lines[-LAST_LINES:])
