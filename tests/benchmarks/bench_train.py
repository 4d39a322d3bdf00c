"""Training benchmark: throughput of the example model and where the train gate's time goes.

Runs `mlgate train` on a copy of the example project against a real MLflow server on loopback:
first with an empty venv root (the project venv is built: the cold set-up a fresh runner pays),
then `--repeat` warm runs per profile and device. For each run it reads back from MLflow the
training loop's own figures (`train_samples_per_second`, `train_seconds`) and takes mlgate's
per-phase timings, so the gate's overhead (everything but the training command) is a share of
the whole. With `--devices cpu,cuda` on a GPU machine it also prints the GPU/CPU ratio.

`--nprocs 1,2` (the default) also trains each profile and device through torchrun (`--distributed N`) and prints,
in the same run, the throughput and wall-time ratios against one process and the launcher's own cost: the part
of the command that is not the training loop, minus that part with one process (startup of N interpreters,
the process group, torchrun itself).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import bench_parser, write_record
from tests.e2e.harness import BIN, Workbench
from tests.e2e.mlflow_server import MlflowServer

TIMINGS_PREFIX = "mlgate train: timings "


def train_once(
    project: Path, profile: str, device: str, uri: str, env: dict[str, str], nproc: int = 1
) -> dict[str, float]:
    command = [
        str(BIN / "mlgate"), "train", "--config", str(project / "mlgate.yaml"), "--profile", profile,
        "--device", device, "--tracking-uri", uri, "--no-dvc-pull",
        "--distributed", str(nproc) if nproc > 1 else "none",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"mlgate train failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    timings = next(
        json.loads(line[len(TIMINGS_PREFIX) :]) for line in done.stdout.splitlines() if line.startswith(TIMINGS_PREFIX)
    )
    run_id = next(
        line.split()[3].rstrip(",") for line in done.stdout.splitlines() if line.startswith("mlgate train: run")
    )
    from mlflow import MlflowClient

    metrics = MlflowClient(uri).get_run(run_id).data.metrics
    return {
        "wall_s": wall,
        "command_s": timings["training"],
        "project_env_s": timings.get("project_env", 0.0),
        "overhead_s": wall - timings["training"],
        "loop_s": metrics["train_seconds"],
        "samples_per_s": metrics["train_samples_per_second"],
        "holdout_roc_auc": metrics["holdout_roc_auc"],
    }


def main() -> int:
    parser = bench_parser(__doc__, "train")
    parser.add_argument("--profiles", default="quick,full")
    parser.add_argument("--devices", default="cpu", help="comma-separated: cpu, cuda")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--nprocs", default="1,2", help="comma-separated process counts (torchrun above 1)")
    args = parser.parse_args()
    results: dict[str, object] = {}
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-train-") as tmp:
        root = Path(tmp)
        server = MlflowServer(root / "mlflow").start()
        try:
            bench = Workbench(root / "wb", tracking_uri=server.uri)
            project = bench.new_project("bench-train").path
            env = dict(os.environ, MLGATE_VENV_ROOT=str(root / "venvs"), DVC_NO_ANALYTICS="1")
            cold = train_once(project, "quick", "cpu", server.uri, env)
            rows.append(("quick/cpu cold (builds project venv)", cold))
            results["cold"] = cold
            for profile in args.profiles.split(","):
                for device in args.devices.split(","):
                    for nproc in (int(n) for n in args.nprocs.split(",")):
                        runs = [
                            train_once(project, profile, device, server.uri, env, nproc) for _ in range(args.repeat)
                        ]
                        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                        name = f"{profile}/{device}" + (f" x{nproc}" if nproc > 1 else "")
                        results[name] = {"median": median, "runs": runs}
                        rows.append((f"{name} warm (median of {args.repeat})", median))
        finally:
            server.stop()
    for profile in args.profiles.split(","):
        cpu, gpu = results.get(f"{profile}/cpu"), results.get(f"{profile}/cuda")
        if isinstance(cpu, dict) and isinstance(gpu, dict):
            results[f"{profile}/cuda_vs_cpu_throughput"] = (
                gpu["median"]["samples_per_s"] / cpu["median"]["samples_per_s"]
            )
    ratios = []
    for profile in args.profiles.split(","):
        for device in args.devices.split(","):
            one = results.get(f"{profile}/{device}")
            for nproc in (int(n) for n in args.nprocs.split(",") if int(n) > 1):
                many = results.get(f"{profile}/{device} x{nproc}")
                if not (isinstance(one, dict) and isinstance(many, dict)):
                    continue
                a, b = one["median"], many["median"]
                entry = {
                    "throughput_ratio": b["samples_per_s"] / a["samples_per_s"],
                    "wall_ratio": b["wall_s"] / a["wall_s"],
                    "launcher_overhead_s": (b["command_s"] - b["loop_s"]) - (a["command_s"] - a["loop_s"]),
                }
                results[f"{profile}/{device} x{nproc} vs x1"] = entry
                ratios.append((f"{profile}/{device} x{nproc} vs x1", entry))
    header = f"{'run':<44} {'wall s':>7} {'cmd s':>7} {'loop s':>7} {'samples/s':>10} {'overhead':>9} {'AUC':>6}"
    print(header)
    print("-" * len(header))
    for label, row in rows:
        share = row["overhead_s"] / row["wall_s"]
        print(
            f"{label:<44} {row['wall_s']:>7.1f} {row['command_s']:>7.1f} {row['loop_s']:>7.2f} "
            f"{row['samples_per_s']:>10.0f} {share:>8.0%} {row['holdout_roc_auc']:>6.3f}"
        )
    for key, value in results.items():
        if key.endswith("cuda_vs_cpu_throughput"):
            print(f"{key}: {value:.1f}x")
    for label, entry in ratios:
        print(
            f"{label}: throughput {entry['throughput_ratio']:.2f}x, wall time {entry['wall_ratio']:.2f}x, "
            f"launcher overhead {entry['launcher_overhead_s']:+.1f} s"
        )
    write_record(args.out, results, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
