"""Time the data gate (load, expectations, drift) on a seeded synthetic frame, as CSV and as Parquet."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mlgate.config import load_config
from mlgate.data import validate_data

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import bench_parser, machine, write_record

CONFIG = """\
version: 1
project: bench
data:
  sources:
    reference: {{path: reference.{ext}}}
    current: {{path: current.{ext}}}
  validate: [reference, current]
  expectations:
    row_count: {{min: 1}}
    columns:
      id: {{type: int, unique: true}}
      amount: {{type: float, min: 0}}
      age: {{type: int, min: 0, max: 120}}
      score: {{type: float, min: 0, max: 1, mostly: 0.99}}
      country: {{type: str, allowed: [de, fr, us, uk, es, it]}}
      channel: {{type: str, allowed: [web, app, store]}}
      returning: {{type: bool}}
  drift:
    reference: reference
    current: current
    exclude: [id]
"""


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(rows) + seed * rows,
            "amount": rng.lognormal(3.0, 1.0, rows),
            "age": rng.integers(18, 90, rows),
            "score": rng.random(rows),
            "f1": rng.normal(0, 1, rows),
            "f2": rng.normal(5, 2, rows),
            "f3": rng.exponential(1.0, rows),
            "f4": rng.integers(0, 1000, rows),
            "country": rng.choice(["de", "fr", "us", "uk", "es", "it"], rows),
            "channel": rng.choice(["web", "app", "store"], rows, p=[0.5, 0.3, 0.2]),
            "segment": rng.choice([f"s{i}" for i in range(40)], rows),
            "returning": rng.random(rows) < 0.4,
        }
    )


def main() -> None:
    parser = bench_parser(__doc__, "validate")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        reference, current = frame(args.rows, 1), frame(args.rows, 2)
        for ext in ("csv", "parquet"):
            folder = root / ext
            folder.mkdir()
            for name, data in (("reference", reference), ("current", current)):
                if ext == "csv":
                    data.to_csv(folder / f"{name}.csv", index=False)
                else:
                    data.to_parquet(folder / f"{name}.parquet", index=False)
            (folder / "mlgate.yaml").write_text(CONFIG.format(ext=ext), encoding="utf-8")
            config = load_config(folder / "mlgate.yaml")
            started = time.perf_counter()
            report = validate_data(config, docs_dir=folder / "docs")
            wall = time.perf_counter() - started
            results.append(
                {
                    "format": ext,
                    "rows": args.rows,
                    "columns": reference.shape[1],
                    "sources": 2,
                    "load_s": report.timings["load"],
                    "expectations_s": report.timings["expectations"],
                    "drift_s": report.timings.get("drift", 0.0),
                    "total_s": wall,
                    "passed": report.passed,
                    "expectations": len(report.expectations),
                    "features": len(report.drift),
                }
            )

    print(f"{'format':8} {'rows':>9} {'load s':>8} {'expect s':>9} {'drift s':>8} {'total s':>8} passed")
    for row in results:
        print(
            f"{row['format']!s:8} {row['rows']:>9} {row['load_s']:>8.2f} {row['expectations_s']:>9.2f} "
            f"{row['drift_s']:>8.2f} {row['total_s']:>8.2f} {row['passed']}"
        )
    write_record(args.out, {"benchmark": "validate-data", **machine(), "results": results})


if __name__ == "__main__":
    main()
