"""Which device the training gets: CUDA when a GPU is visible to the project's torch, else CPU."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
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


_TORCH_VERSION = re.compile(r"^__version__\s*=\s*['\"](?P<value>[^'\"]+)['\"]", re.MULTILINE)
_TORCH_CUDA = re.compile(r"^cuda(?::\s*Optional\[str\])?\s*=\s*(?:['\"](?P<value>[^'\"]+)['\"]|None)", re.MULTILINE)


def read_without_import(python: Path | str) -> DeviceInfo | None:
    """What the probe would say on a machine where no NVIDIA driver shows (so CUDA cannot be available), read
    from the venv's files instead of importing torch (about 1.2 s a train job): the interpreter's version from
    pyvenv.cfg, torch's version and CUDA build from torch/version.py. None when the interpreter is not a venv's
    or a file is not as expected: then `probe` runs."""
    venv = Path(python).parent.parent
    try:
        config = (venv / "pyvenv.cfg").read_text(encoding="utf-8")
    except OSError:
        return None
    version = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+\.\d+)", config, re.MULTILINE)
    if version is None:
        return None
    major_minor = ".".join(version.group(1).split(".")[:2])
    site = venv / "lib" / f"python{major_minor}" / "site-packages"
    if not site.is_dir():
        return None
    torch_file = site / "torch" / "version.py"
    if not torch_file.is_file():
        # No torch package at all (a scikit-learn project): nothing could use a GPU.
        if (site / "torch").exists():
            return None
        return DeviceInfo(python=version.group(1), torch=None, cuda_available=False, torch_cuda=None, device_count=0)
    text = torch_file.read_text(encoding="utf-8")
    torch_version, torch_cuda = _TORCH_VERSION.search(text), _TORCH_CUDA.search(text)
    if torch_version is None or torch_cuda is None:
        return None
    return DeviceInfo(
        python=version.group(1), torch=torch_version["value"], cuda_available=False, torch_cuda=torch_cuda["value"],
        device_count=0,
    )  # fmt: skip


def probe(python: Path | str) -> DeviceInfo:
    """Ask the project's interpreter what torch and CUDA it sees; without an NVIDIA driver in sight, read it from
    the venv's files (`read_without_import`) when they say it plainly."""
    if not driver_visible():
        found = read_without_import(python)
        if found is not None:
            return found
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
