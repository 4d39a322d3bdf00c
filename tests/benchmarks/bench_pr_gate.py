"""Times the example project's PR gate under act, cold (empty caches) and warm, stage by stage.

Cold: a new workbench, so the setup action finds no venv in the runner's tool cache nor in the
(stand-in) actions cache and builds it from the lock file; pip's own download cache on the machine
is left as it is. Warm: the same PR again on that workbench. Stages are act's per-step timings.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.harness import ActResult, Workbench

# act prints e.g. "[ML pull request/ml-ci/lint] ✅  Success - Main mlgate lint [12.3s]"
STEP = re.compile(
    r"^\[(?P<job>[^\]]+)\]\s+(?:✅|❌)\s+(?:Success|Failure) - (?P<step>.+?) \[(?P<secs>[\d.]+)(?P<unit>m?s)\]"
)


def stages(result: ActResult) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in result.output.splitlines():
        match = STEP.match(line.strip())
        if not match:
            continue
        seconds = float(match["secs"]) / (1000.0 if match["unit"] == "ms" else 1.0)
        job = match["job"].rsplit("/", 1)[-1]
        key = f"{job}: {match['step']}"
        found[key] = found.get(key, 0.0) + seconds
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-results/pr_gate.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-") as tmp:
        bench = Workbench(Path(tmp))
        project = bench.new_project("bench")
        runs = {}
        for label in ("cold", "warm"):
            result = bench.act(project)
            if result.returncode != 0:
                print(result.output[-5000:], file=sys.stderr)
                raise SystemExit(f"{label} run of the PR gate failed")
            runs[label] = {"total_s": round(result.seconds, 2), "stages_s": stages(result)}
    names = sorted(set(runs["cold"]["stages_s"]) | set(runs["warm"]["stages_s"]))
    width = max(len(n) for n in [*names, "stage"])
    print(f"{'stage':<{width}}  {'cold s':>8}  {'warm s':>8}")
    for name in names:
        cold = runs["cold"]["stages_s"].get(name, float("nan"))
        warm = runs["warm"]["stages_s"].get(name, float("nan"))
        print(f"{name:<{width}}  {cold:>8.2f}  {warm:>8.2f}")
    print(f"{'TOTAL (act wall time)':<{width}}  {runs['cold']['total_s']:>8.2f}  {runs['warm']['total_s']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "pr_gate_under_act", "runs": runs}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
