"""Model-test benchmark: the full `mlgate test-model` stage on the example project, by holdout size.

On a copy of the example project and a real MLflow server on loopback, trains a candidate
(`--profile quick`) and a weaker champion (profile `champion`, added to the copy: one epoch on
20k rows), registers the champion as `fraud-detection@champion`, then runs `mlgate test-model`
on holdouts of growing size: the real data/test.csv (10k rows) and bigger ones sampled from it
with replacement (seeded, fresh transaction_id values), each pointed at by data.sources.test.
The first run is reported apart as cold (first pytest in the project venv; with --fresh-venv it
also builds that venv); each size is then run `--repeats` times warm and the median reported.

Phases come from mlgate's `timings` line (project_env, pytest) and the JUnit XML's testcase
times: `load` is the pytest run's time outside any test (interpreter and imports, collection,
reading the holdout, loading both models from MLflow, preparing the perturbed rows), the rest
are the families of the declared checks and the project's own tests (tests/model).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import bench_parser, machine, outside_env, write_record
from tests.e2e.harness import BIN, REPO_ROOT
from tests.e2e.mlflow_server import MlflowServer

CHAMPION_PROFILE = {"max_rows": 20000, "epochs": 1, "lr": 0.003}
REGISTERED_MODEL, ALIAS = "fraud-detection", "champion"
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache", "mlruns", "mlflow.db",
    "mlgate-reports", "mlgate-data-docs",
)  # fmt: skip
TIMINGS_PREFIX = "mlgate test-model: timings "
# Family of a JUnit testcase: the declared checks by id prefix (classname mlgate.yaml), else the project's tests.
FAMILIES = ("load", "metrics", "slices", "latency", "behavioral", "baseline", "own_tests")
ID_SEED = 10_000_001  # sampled rows get transaction_id values far from the real ones


def read_outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT as written by mlgate: `name<<delimiter`, the value's lines, `delimiter`."""
    outputs: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    index = 0
    while index < len(lines):
        name, _, delimiter = lines[index].partition("<<")
        end = lines.index(delimiter, index + 1)
        outputs[name] = "\n".join(lines[index + 1 : end])
        index = end + 1
    return outputs


def mlgate(
    args: list[str], project: Path, env: dict[str, str], timeout: float, ok: tuple[int, ...] = (0,)
) -> tuple[str, dict[str, str], float]:
    """Run `mlgate <args>` in the project; its stdout, its $GITHUB_OUTPUT and the wall time.

    An exit code outside `ok` stops the benchmark; test-model passes ok=(0, 1): 1 is a failed check
    (GateFailed), a measured outcome, while 2-4 (config, input, tool errors) mean nothing was measured.
    """
    outputs = Path(env["GITHUB_OUTPUT"])
    outputs.write_text("", encoding="utf-8")
    command = [str(BIN / "mlgate"), args[0], "--config", str(project / "mlgate.yaml"), *args[1:]]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in ok:
        tail = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return done.stdout, read_outputs(outputs), wall


def family(classname: str, name: str) -> str:
    if not classname.endswith(("mlgate.yaml", "mlgate.yml")):
        return "own_tests"
    if name.startswith("performance.slices."):
        return "slices"
    if name.startswith("performance.latency."):
        return "latency"
    if name.startswith("performance."):
        return "metrics"
    return name.split(".", 1)[0]  # behavioral, baseline


def junit_phases(path: Path, pytest_s: float) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Seconds per family (and `load`: pytest's time outside any testcase), per testcase, and the failed ones."""
    cases: dict[str, float] = {}
    failed: list[str] = []
    phases = dict.fromkeys(FAMILIES, 0.0)
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name, seconds = case.get("classname", ""), case.get("name", ""), float(case.get("time", 0))
        cases[f"{classname}::{name}"] = seconds
        phases[family(classname, name)] += seconds
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{classname}::{name}")
    phases["load"] = pytest_s - sum(cases.values())
    return phases, cases, failed


def run_test_model(
    project: Path, model_uri: str, tracking_uri: str, env: dict[str, str], timeout: float
) -> dict[str, Any]:
    junit = project / "mlgate-reports" / "model-tests.xml"
    junit.unlink(missing_ok=True)
    args = ["test-model", "--model", model_uri, "--tracking-uri", tracking_uri, "--no-dvc-pull", "--no-comment",
            "--junit-xml", str(junit)]  # fmt: skip
    stdout, outputs, wall = mlgate(args, project, env, timeout, ok=(0, 1))
    timings = next(
        json.loads(line[len(TIMINGS_PREFIX) :]) for line in stdout.splitlines() if line.startswith(TIMINGS_PREFIX)
    )
    phases, cases, failed = junit_phases(Path(outputs["junit-xml"]), timings["pytest"])
    return {
        "wall_s": wall,
        "project_env_s": timings.get("project_env", 0.0),
        "pytest_s": timings["pytest"],
        "cli_s": wall - timings["pytest"] - timings.get("project_env", 0.0),
        **{f"{name}_s": seconds for name, seconds in phases.items()},
        "passed": outputs.get("passed") == "true",
        "promotable": outputs.get("promotable") == "true",
        "failed": failed,
        "metrics": json.loads(outputs.get("metrics") or "{}"),
        "testcases": len(cases),
        "testcase_s": cases,
    }


def make_holdout(project: Path, rows: int, seed: int) -> str:
    """A holdout of `rows` rows: the real test.csv at its own size, else rows sampled from it (with replacement)."""
    test = pd.read_csv(project / "data" / "test.csv")
    if rows == len(test):
        return "data/test.csv"
    frame = test.iloc[np.random.default_rng(seed).integers(0, len(test), rows)].reset_index(drop=True)
    frame["transaction_id"] = np.arange(ID_SEED, ID_SEED + rows)
    name = f"data/holdout-{rows}.csv"
    frame.to_csv(project / name, index=False)
    return name


def rewrite_config(project: Path, edit: Any) -> None:
    path = project / "mlgate.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def register_champion(tracking_uri: str, model_uri: str) -> str:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    version = mlflow.register_model(model_uri, REGISTERED_MODEL)
    MlflowClient(tracking_uri).set_registered_model_alias(REGISTERED_MODEL, ALIAS, version.version)
    return str(version.version)


def label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    numbers = [key for key, value in runs[0].items() if isinstance(value, float)]
    median: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in numbers}
    median["passed"] = all(run["passed"] for run in runs)
    median["promotable"] = all(run["promotable"] for run in runs)
    return median


def markdown(rows: list[tuple[str, int, dict[str, Any]]]) -> str:
    header = ["run", "rows", "wall s", "project env s", "pytest s", *(f"{name} s" for name in FAMILIES), "cli s",
              "passed / promotable"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * (len(header) - 2), "---"]) + "|"]
    for name, count, run in rows:
        cells = [name, f"{count:,}", *(f"{run[key]:.2f}" for key in ("wall_s", "project_env_s", "pytest_s"))]
        cells += [f"{run[f'{phase}_s']:.2f}" for phase in FAMILIES]
        cells += [f"{run['cli_s']:.2f}", f"{run['passed']} / {run['promotable']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = bench_parser(__doc__, "model_test")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated holdout row counts")
    parser.add_argument("--repeats", type=int, default=1, help="warm runs per size (the median is reported)")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the row sampling")
    parser.add_argument(
        "--fresh-venv",
        action="store_true",
        help="test-model uses an empty venv root, so the cold run builds the project venv (training keeps the "
        "usual one: MLGATE_VENV_ROOT or ~/.cache/mlgate)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one mlgate command")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="mlgate-bench-model-test-"))
    server: MlflowServer | None = None
    try:
        project = Path(shutil.copytree(REPO_ROOT / "example-project", root / "project", ignore=COPY_IGNORE))
        rewrite_config(project, lambda config: config["train"]["profiles"].update(champion=CHAMPION_PROFILE))
        server = MlflowServer(root / "mlflow").start()
        env = outside_env()
        env.update(GITHUB_OUTPUT=str(root / "github-output"), GITHUB_STEP_SUMMARY=str(root / "step-summary.md"),
                   DVC_NO_ANALYTICS="1")  # fmt: skip
        trained = {}
        for name, profile in (("candidate", "quick"), ("champion", "champion")):
            train = ["train", "--profile", profile, "--device", "cpu", "--tracking-uri", server.uri, "--no-dvc-pull"]
            _, outputs, wall = mlgate(train, project, env, args.timeout)
            trained[name] = {"profile": profile, "model_uri": outputs["model-uri"], "train_wall_s": wall,
                             "metrics": json.loads(outputs["metrics"])}  # fmt: skip
            print(f"trained the {name} ({profile}): {outputs['model-uri']} in {wall:.1f} s", flush=True)
        trained["champion"]["version"] = register_champion(server.uri, trained["champion"]["model_uri"])
        if args.fresh_venv:
            env["MLGATE_VENV_ROOT"] = str(root / "venvs")

        holdouts: dict[int, str] = {}
        for rows in sizes:
            started = time.perf_counter()
            holdouts[rows] = make_holdout(project, rows, args.seed)
            print(f"holdout {label(rows)}: {holdouts[rows]} ({time.perf_counter() - started:.1f} s)", flush=True)

        def point_at(rows: int) -> None:
            rewrite_config(project, lambda config: config["data"]["sources"]["test"].update(path=holdouts[rows]))

        candidate = trained["candidate"]["model_uri"]
        point_at(sizes[0])
        cold = run_test_model(project, candidate, server.uri, env, args.timeout)
        print(f"cold ({label(sizes[0])}): {cold['wall_s']:.1f} s", flush=True)
        results = []
        for rows in sizes:
            point_at(rows)
            runs = []
            for _ in range(args.repeats):
                runs.append(run_test_model(project, candidate, server.uri, env, args.timeout))
                print(f"warm {label(rows)}: {runs[-1]['wall_s']:.1f} s", flush=True)
            results.append({"size": label(rows), "rows": rows, "median": median_of(runs), "runs": runs})
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)

    table = [(f"cold ({label(sizes[0])})", sizes[0], cold)]
    table += [(f"{r['size']} warm (median of {args.repeats})", r["rows"], r["median"]) for r in results]
    print()
    print(markdown(table))
    base = results[0]["median"]["wall_s"]
    print()
    for name, runs in [("cold", [cold]), *((f"{r['size']} warm", r["runs"]) for r in results)]:
        if failed := sorted({case for run in runs for case in run["failed"]}):
            print(f"{name}: failed {', '.join(failed)}")
    for result in results[1:]:
        print(f"{result['size']}: {result['median']['wall_s'] / base:.1f}x the wall time of {results[0]['size']}")
    payload = {
        "benchmark": "model-test",
        **machine(),
        "repeats": args.repeats,
        "fresh_venv": args.fresh_venv,
        "models": trained,
        "cold": {"size": label(sizes[0]), "rows": sizes[0], **cold},
        "results": results,
    }
    write_record(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
