"""Which device the training gets: CUDA when a GPU is visible to the project's torch, else CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlgate.errors import ToolError

# Runs in the project's venv: its torch decides what the training can use, not mlgate's.
_PROBE = r"""
import json, platform
info = {"python": platform.python_version(), "torch": None, "cuda_available": False, "torch_cuda": None,
        "device_count": 0, "gpus": []}
try:
    import torch
except ImportError:
    pass
else:
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = bool(torch.cuda.is_available())
    if info["cuda_available"]:
        info["device_count"] = torch.cuda.device_count()
        for index in range(info["device_count"]):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                                 "capability": f"{props.major}.{props.minor}"})
print(json.dumps(info))
"""


@dataclass
class DeviceInfo:
    """What the probe saw, and the device chosen from it."""

    python: str
    torch: str | None
    cuda_available: bool
    torch_cuda: str | None
    device_count: int
    gpus: list[dict[str, object]] = field(default_factory=list)
    driver: str | None = None
    chosen: str = "cpu"
    note: str = ""

    @property
    def gpu_name(self) -> str | None:
        return str(self.gpus[0]["name"]) if self.gpus else None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _driver_version() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    done = subprocess.run(
        [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    first = done.stdout.strip().splitlines()
    return first[0].strip() if done.returncode == 0 and first else None


def driver_visible() -> bool:
    """Cheap, before any venv exists: an NVIDIA driver shows as nvidia-smi or /dev/nvidia* nodes."""
    return shutil.which("nvidia-smi") is not None or any(Path("/dev").glob("nvidia[0-9]*"))


def precheck(wanted: str, require_gpu: bool) -> None:
    """Fail at once, before minutes of installing the project venv, when a GPU is required and no driver shows."""
    if (require_gpu or wanted == "cuda") and not driver_visible():
        info = DeviceInfo(python="", torch="?", cuda_available=False, torch_cuda="?", device_count=0)
        choose(info, wanted, require_gpu)


def probe(python: Path | str) -> DeviceInfo:
    """Ask the project's interpreter what torch and CUDA it sees."""
    done = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise ToolError(f"the device probe failed in {python}: {done.stderr.strip()[-600:]}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    return DeviceInfo(**raw, driver=_driver_version())


def choose(info: DeviceInfo, wanted: str, require_gpu: bool) -> DeviceInfo:
    """Settle `info.chosen`; fail at once when a GPU is required or asked for and none is visible."""
    if (require_gpu or wanted == "cuda") and not info.cuda_available:
        if info.torch is None:
            why = "torch is not installed in the project environment (environment.install)"
        elif info.torch_cuda is None:
            why = f"the project's torch {info.torch} is a CPU-only build (torch.version.cuda is None)"
        elif info.driver is None:
            why = "no NVIDIA driver is visible (nvidia-smi not found)"
        else:
            why = f"torch {info.torch} (CUDA {info.torch_cuda}) sees no GPU with driver {info.driver}"
        asked = "require-gpu is true" if require_gpu else "device is cuda"
        raise ToolError(
            f"no CUDA GPU visible to the training ({asked}): {why}",
            hint=(
                "on a self-hosted GPU runner check the NVIDIA driver (nvidia-smi), that the runner's user can open "
                "/dev/nvidia*, that CUDA_VISIBLE_DEVICES is not empty, and that the job runs on the `gpu` label; "
                "or set require-gpu: false to fall back to the CPU"
            ),
        )
    if info.cuda_available and wanted in ("auto", "cuda"):
        info.chosen = "cuda"
        info.note = f"CUDA: {info.device_count} x {info.gpu_name}"
    elif wanted == "cpu":
        info.chosen, info.note = "cpu", "CPU, as configured (device: cpu)"
    elif info.torch is None:
        # Without torch the project has no way to use a GPU: no fallback happened, so nothing to warn about.
        info.chosen, info.note = "cpu", "CPU (the project environment has no torch)"
    else:
        info.chosen = "cpu"
        info.note = "no GPU visible: fell back to the CPU (set require-gpu: true to fail instead)"
    return info
