"""Times the example project's PR gate under act, cold (empty caches) and warm, stage by stage.

Cold: a new workbench, so the setup action finds no venv in the runner's tool cache nor in the
(stand-in) actions cache and builds it from the lock file; pip's own download cache on the machine
is left as it is. Warm: the same PR again on that workbench, then once more (warm again). Restored:
once more after removing the project venv from the runner's tool cache: each job restores it from the
Actions cache (stand-in), as on a fresh hosted runner (actions/project-env). Stages are act's per-step timings.
The train job's overhead is its whole time minus the training command's own (from mlgate's
`timings` line): set-up of mlgate and the project venv, device probe, dvc pull and MLflow calls.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import bench_parser, write_record
from tests.e2e.harness import ActResult, Workbench
from tests.e2e.mlflow_server import MlflowServer

# act prints e.g. "[ML pull request/ml-ci/lint] ✅  Success - Main mlgate lint [12.3s]"
STEP = re.compile(r"^\[(?P<job>[^\]]+)\]\s+(?:✅|❌)\s+(?:Success|Failure) - (?P<step>.+?) \[(?P<took>[\d.hms]+)\]")
# act prints Go durations: 812.3ms, 12.5s, 1m35.2s (a step over a minute was skipped before this was read right)
DURATION = re.compile(r"(?P<value>[\d.]+)(?P<unit>h|ms|m|s)")
UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def seconds_of(took: str) -> float:
    return sum(float(part["value"]) * UNIT_S[part["unit"]] for part in DURATION.finditer(took))


def stages(result: ActResult) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in result.output.splitlines():
        match = STEP.match(line.strip())
        if not match:
            continue
        seconds = seconds_of(match["took"])
        job = match["job"].rsplit("/", 1)[-1].strip()
        key = f"{job}: {match['step']}"
        found[key] = found.get(key, 0.0) + seconds
    return found


# cold: empty caches; warm: the same PR again (the first run after the cold one: the compress job of the cold run
# added its libraries to the project venv after lint cached mypy's work, so mypy re-checks once); warm again: the
# steady state of a runner that keeps its venvs; restored: again after removing the project venv from the runner's
# tool cache, so each job restores it from the Actions cache (stand-in), as a fresh hosted runner would.
LABELS = ("cold", "warm", "warm again", "restored")
TIMINGS = re.compile(r"\[[^\]]*train\s*\]\s+\|\s+mlgate train: timings (?P<json>\{.*\})")


def train_job(result: ActResult, found: dict[str, float]) -> dict[str, float]:
    """The train job's time, the training command's share of it, and the rest (the gate's overhead).

    act reports a composite action's own step *and* each step inside it, so the job's time is the
    top-level steps only: checkout, setup-python and the train action as a whole. act interleaves
    the lines of parallel jobs, so a step line can be lost; such a run reports NaN, not a guess.
    """
    top_level = (
        "train: Main actions/checkout@",
        "train: Main actions/setup-python@",
        "train: Main mlgate/mlgate/actions/train@",
    )
    job = sum(seconds for name, seconds in found.items() if name.startswith(top_level))
    if not any(name.startswith(top_level[2]) for name in found):
        job = float("nan")
    match = next((m for m in map(TIMINGS.search, result.output.splitlines()) if m), None)
    command = float(json.loads(match["json"])["training"]) if match else float("nan")
    return {
        "job_s": job,
        "training_command_s": command,
        "overhead_s": job - command,
        "overhead_share": (job - command) / job,
        # The aim: the gate's overhead at most 1x the compute it wraps.
        "overhead_ratio": (job - command) / command,
    }


def main() -> int:
    parser = bench_parser(__doc__, "pr_gate")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)  # each run's act log is written beside the JSON
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-") as tmp:
        server = MlflowServer(Path(tmp) / "mlflow").start()
        try:
            bench = Workbench(Path(tmp), tracking_uri=server.uri)
            project = bench.new_project("bench")
            runs = {}
            for label in LABELS:
                if label == "restored":
                    # A fresh hosted runner: no project venv on the machine, the Actions cache (stand-in) has it.
                    for venv in bench.venv_root.glob("project-*"):
                        if venv.is_dir():  # not its lock file
                            shutil.rmtree(venv)
                result = bench.act(project)
                if result.returncode != 0:
                    print(result.output[-5000:], file=sys.stderr)
                    raise SystemExit(f"{label} run of the PR gate failed")
                log = args.out.parent / f"{args.out.stem}-{label.replace(' ', '-')}.log"
                log.write_text(result.output, encoding="utf-8")
                found = stages(result)
                runs[label] = {
                    "total_s": round(result.seconds, 2),
                    "stages_s": found,
                    "train": train_job(result, found),
                }
        finally:
            server.stop()
    names = sorted(set().union(*(runs[label]["stages_s"] for label in LABELS)))
    width = max(len(n) for n in [*names, "stage"])
    print(f"{'stage':<{width}}  " + "  ".join(f"{label + ' s':>10}" for label in LABELS))
    for name in names:
        print(
            f"{name:<{width}}  "
            + "  ".join(f"{runs[label]['stages_s'].get(name, float('nan')):>10.2f}" for label in LABELS)
        )
    print(f"{'TOTAL (act wall time)':<{width}}  " + "  ".join(f"{runs[label]['total_s']:>10.2f}" for label in LABELS))
    for label in LABELS:
        train = runs[label]["train"]
        print(
            f"train job ({label}): {train['job_s']:.1f} s, training command {train['training_command_s']:.1f} s, "
            f"gate overhead {train['overhead_s']:.1f} s ({train['overhead_share']:.0%} of the job, "
            f"{train['overhead_ratio']:.2f}x the training command)"
        )
    write_record(args.out, {"benchmark": "pr_gate_under_act", "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
