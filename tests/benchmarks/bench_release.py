"""Times the example project's release workflow (ml-release.yml) under act, job by job.

One push to main on a fresh workbench (a cold runner: mlgate's venv and the project venv built on
first use) and a second push (warm), against a local MLflow server, with the production approval from
the GitHub API stand-in. A job's time is the sum of its top-level steps as act reports them
(checkout, setup-python and the mlgate action, whose inner steps are not added again); the whole is
act's wall time. The first release becomes @champion; the second (the same model) is refused, which is
what a release that brings no better model costs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import bench_parser, write_record
from tests.benchmarks.bench_pr_gate import STEP, seconds_of
from tests.e2e.github_api import GitHubApiStandin
from tests.e2e.harness import ActResult, Workbench
from tests.e2e.mlflow_server import MlflowServer

JOBS = ("train", "test-model", "compress", "register", "staging", "production")
TOP_LEVEL = ("Main actions/checkout@", "Main actions/setup-python@", "Main mlgate/mlgate/actions/")


def job_seconds(result: ActResult) -> dict[str, float]:
    """Each job's time: its top-level steps (a composite action's inner steps are reported too; not added)."""
    found = dict.fromkeys(JOBS, 0.0)
    for line in result.output.splitlines():
        match = STEP.match(line.strip())
        if not match or not match["step"].startswith(TOP_LEVEL):
            continue
        job = match["job"].rsplit("/", 1)[-1].strip()
        if job in found:
            found[job] += seconds_of(match["took"])
    return found


def main() -> int:
    parser = bench_parser(__doc__, "release")
    args = parser.parse_args()
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-release-") as tmp:
        server = MlflowServer(Path(tmp) / "mlflow").start()
        try:
            bench = Workbench(Path(tmp), tracking_uri=server.uri)
            project = bench.new_project("release")
            project.git("checkout", "-q", "main")
            with GitHubApiStandin() as github_api:
                github_api.approve("production", "release-manager")
                for label in ("cold: first release (promoted)", "warm: same model again (refused)"):
                    if runs:
                        project.git("commit", "-q", "--allow-empty", "-m", "no model change")
                    result = bench.act(project, workflow="release.yml", event="push", github_api=github_api,
                                       variables={"MLGATE_REQUIRE_GPU": "false"})  # fmt: skip
                    runs.append({"run": label, "exit": result.returncode, "wall_s": result.seconds,
                                 "jobs_s": job_seconds(result)})  # fmt: skip
        finally:
            server.stop()
    header = f"{'run':<36}{'exit':>5}{'wall s':>9}" + "".join(f"{job:>12}" for job in JOBS)
    print(header)
    for run in runs:
        jobs = run["jobs_s"]
        assert isinstance(jobs, dict)
        print(f"{run['run']:<36}{run['exit']:>5}{run['wall_s']:>9.1f}" + "".join(f"{jobs[j]:>12.1f}" for j in JOBS))
    print("(job seconds: top-level steps as act reports them; jobs of one run partly overlap, so they need not add up)")
    write_record(args.out, {"runs": runs})
    return 0 if runs and runs[0]["exit"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
