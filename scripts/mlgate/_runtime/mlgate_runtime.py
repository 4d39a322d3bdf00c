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


@dataclass(frozen=True)
class TrainContext:
    """The training run as mlgate declared it."""

    profile: str
    seed: int
    device: str
    deterministic: bool
    params: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str, default: Any = None) -> Any:
        """A profile parameter (from `train.profiles.<profile>` in mlgate.yaml), or `default`."""
        return self.params.get(name, default)


def _best_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def context() -> TrainContext:
    """Read the context `mlgate train` exported (defaults when run by hand)."""
    raw = os.environ.get(ENV_PARAMS, "")
    params = json.loads(raw) if raw else {}
    if not isinstance(params, dict):
        raise ValueError(f"{ENV_PARAMS} must be a JSON object, got {raw[:80]!r}")
    return TrainContext(
        profile=os.environ.get(ENV_PROFILE, "local"),
        seed=int(os.environ.get(ENV_SEED, "0")),
        device=os.environ.get(ENV_DEVICE) or _best_device(),
        deterministic=os.environ.get(ENV_DETERMINISTIC, "0") == "1",
        params=params,
    )


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
    """`context()`, with every random generator seeded as it declares."""
    ctx = context()
    seed_everything(ctx.seed, ctx.deterministic)
    return ctx
