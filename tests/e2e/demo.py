"""`make demo`: the example project's pull-request workflow under act, on this checkout.

Two pull requests: one with good data, which passes, and one whose training data drifted,
which the data gate stops with the drifted features named. Uses only loopback and temp folders.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.harness import ActResult, Workbench

KEEP = re.compile(r"(::error|::warning|FAILED|DRIFT|Job succeeded|Job failed|mlgate \S+ ready|✅ |❌ )")


def show(title: str, result: ActResult) -> None:
    print(f"\n=== {title}: act exit {result.returncode} in {result.seconds:.0f}s ===")
    for line in result.output.splitlines():
        if KEEP.search(line):
            print("  " + line.strip()[:220])


def drift(frame: pd.DataFrame) -> pd.DataFrame:
    frame["amount"] = frame["amount"] * 4.0
    return frame


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mlgate-demo-") as tmp:
        bench = Workbench(Path(tmp))
        good = bench.new_project("good-data")
        good_result = bench.act(good)
        show("PR with good data (expected: pass)", good_result)
        drifted = bench.new_project("drifted-data")
        drifted.change_data("train", drift, "data: amounts from the new card scheme")
        drifted_result = bench.act(drifted)
        show("PR with drifted training data (expected: fail on drift)", drifted_result)
    ok = good_result.returncode == 0 and drifted_result.returncode != 0
    print("\ndemo " + ("OK: the good PR passed and the drifted PR was stopped" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
