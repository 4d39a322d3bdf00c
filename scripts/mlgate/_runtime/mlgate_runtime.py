"""What `mlgate train` hands to a project's training code: profile, parameters, seed and device.

Standard library only, so it imports in any project environment. `mlgate train` puts this file's
folder on PYTHONPATH of the training command (and of `dvc repro`, which inherits it); training
code calls `setup()` once at start:

    from mlgate_runtime import setup
    ctx = setup()                    # seeds Python, NumPy, torch (and CUDA); deterministic if asked
    epochs = ctx.param("epochs", 10)
    model.to(ctx.device)

Outside `mlgate train` the same call works with defaults (profile "local", seed 0, the best device),
so the training module still runs as a plain `python -m ...`.

Under torchrun (`train.distributed` in mlgate.yaml) `setup()` also joins the process group (NCCL on
CUDA, Gloo on CPU), gives each process its own GPU (`cuda:<LOCAL_RANK>`) and its own seed, and tells it
its place:

    ctx.rank, ctx.world_size, ctx.is_main     # rank 0 alone logs to MLflow and logs the model
    sampler = ctx.sampler(dataset)            # a DistributedSampler: each rank its own share of the rows
    loss = ctx.reduce(loss_sum, op="sum")     # a number summed (or averaged) over every rank

Seeds: rank r seeds its generators with `seed + r`. Data-parallel ranks must not draw the same dropout
masks (that would be one replica's noise copied N times), yet the run stays reproducible: the same
world size and seed give every rank the same seed again. `ctx.base_seed` is the declared seed, the
same on every rank, for whatever must agree across ranks (the sampler's shuffle, initial weights).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

ENV_PROFILE = "MLGATE_PROFILE"
ENV_PARAMS = "MLGATE_PARAMS"
ENV_SEED = "MLGATE_SEED"
ENV_DEVICE = "MLGATE_DEVICE"
ENV_DETERMINISTIC = "MLGATE_DETERMINISTIC"
ENV_BACKEND = "MLGATE_DIST_BACKEND"  # nccl or gloo, chosen by `mlgate train` from the device
ENV_DEVICES_FILE = "MLGATE_DIST_DEVICES"  # where rank 0 writes every rank's host and device (lineage)


@dataclass(frozen=True)
class TrainContext:
    """The training run as mlgate declared it; under torchrun, this process's place in it."""

    profile: str
    seed: int  # this rank's seed: the declared one plus the rank
    device: str  # this rank's device: cuda:<LOCAL_RANK> under torchrun on CUDA
    deterministic: bool
    params: dict[str, Any] = field(default_factory=dict)
    base_seed: int = 0  # the declared seed, the same on every rank
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""  # nccl or gloo when distributed, else empty

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs to MLflow and logs the model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Started by torchrun, in a process group: also a world of one (`train.distributed: 1`), the usual smoke
        test of a DDP code path on one GPU."""
        return self.backend != ""

    def param(self, name: str, default: Any = None) -> Any:
        """A profile parameter (from `train.profiles.<profile>` in mlgate.yaml), or `default`."""
        return self.params.get(name, default)

    def sampler(self, dataset: Any, *, shuffle: bool = True, drop_last: bool = False) -> Any:
        """A `torch.utils.data.DistributedSampler` over `dataset` for this rank, shuffled with the declared seed
        (the same permutation on every rank, each taking its share). Call `set_epoch(epoch)` on it every epoch.
        With one process it still works: the whole dataset, in the same seeded order."""
        from torch.utils.data import DistributedSampler

        return DistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=self.base_seed,
            drop_last=drop_last,
        )  # fmt: skip

    def reduce(self, value: Any, op: str = "mean") -> float:
        """`value` (a number or a one-element tensor) summed or averaged over every rank; every rank must call
        it (a collective), and each gets the result. With one process: the value itself."""
        if op not in ("mean", "sum"):
            raise ValueError(f"reduce op must be 'mean' or 'sum', not {op!r}")
        if not self.distributed:
            return float(value)
        import torch
        import torch.distributed as dist

        on = torch.device(self.device) if self.backend == "nccl" else torch.device("cpu")
        tensor = torch.as_tensor(float(value), dtype=torch.float64, device=on)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        total = float(tensor.item())
        return total / self.world_size if op == "mean" else total

    def barrier(self) -> None:
        """Wait for every rank (no-op with one process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def _best_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def context() -> TrainContext:
    """Read the context `mlgate train` exported (defaults when run by hand), and torchrun's (RANK, LOCAL_RANK,
    WORLD_SIZE) when it started this process."""
    raw = os.environ.get(ENV_PARAMS, "")
    params = json.loads(raw) if raw else {}
    if not isinstance(params, dict):
        raise ValueError(f"{ENV_PARAMS} must be a JSON object, got {raw[:80]!r}")
    base_seed = int(os.environ.get(ENV_SEED, "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = os.environ.get(ENV_DEVICE) or _best_device()
    backend = ""
    launched = os.environ.get(ENV_BACKEND, "")  # `mlgate train` launched torchrun, even with one process
    if world_size > 1 or (launched and "WORLD_SIZE" in os.environ):
        backend = launched or ("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
    return TrainContext(
        profile=os.environ.get(ENV_PROFILE, "local"),
        seed=base_seed + rank,
        device=device,
        deterministic=os.environ.get(ENV_DETERMINISTIC, "0") == "1",
        params=params,
        base_seed=base_seed,
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        backend=backend,
    )


def init_distributed(ctx: TrainContext) -> None:
    """Join torchrun's process group (env:// rendezvous), bind this rank's GPU, and have rank 0 record every
    rank's host and device where `mlgate train` asked (its lineage). The group is left at exit."""
    import atexit
    import socket

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if ctx.backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend="nccl", device_id=torch.device(ctx.device))
    else:
        dist.init_process_group(backend=ctx.backend)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    name = torch.cuda.get_device_name(ctx.local_rank) if ctx.device.startswith("cuda") else "cpu"
    mine = {"rank": ctx.rank, "local_rank": ctx.local_rank, "host": socket.gethostname(), "device": ctx.device,
            "name": name}  # fmt: skip
    everyone: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(everyone, mine)
    target = os.environ.get(ENV_DEVICES_FILE)
    if ctx.is_main and target:
        with open(target, "w", encoding="utf-8") as handle:
            json.dump(everyone, handle)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all CUDA devices too); optionally force deterministic kernels."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace for deterministic GEMMs; mlgate train sets it before start,
        # setdefault covers a run by hand (it only takes effect before CUDA initialises).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def setup() -> TrainContext:
    """`context()`, with every random generator seeded as it declares (this rank's seed), and under torchrun the
    process group joined (`init_distributed`)."""
    ctx = context()
    if ctx.distributed:
        init_distributed(ctx)
    seed_everything(ctx.seed, ctx.deterministic)
    return ctx
