"""What the benchmarks' main() functions share: the parser with --out, the environment a benchmark's commands
run in, the machine a record names, and writing the record (JSON under bench-results/, as the Makefile's bench
target asks)."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any


def bench_parser(description: str | None, name: str) -> argparse.ArgumentParser:
    """A benchmark's parser: its module docstring as the help, as written, and --out (bench-results/<name>.json)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(f"bench-results/{name}.json"))
    return parser


def outside_env() -> dict[str, str]:
    """This process's environment without a runner's action inputs and GitHub variables (MLGATE_INPUT_*,
    GITHUB_*), so the commands a benchmark runs read only what it gives them."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("MLGATE_INPUT_", "GITHUB_"))}


def machine() -> dict[str, Any]:
    """The machine a record was measured on."""
    return {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()}


def command_line(args: argparse.Namespace) -> dict[str, Any]:
    """The command line a record was measured with (paths as strings)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def write_record(out: Path, record: Any, **dumps: Any) -> None:
    """Write the record as JSON to `out` (its folder made), and say where; `dumps` goes to json.dumps."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, **{"indent": 2, **dumps}) + "\n", encoding="utf-8")
    print(f"wrote {out}")
