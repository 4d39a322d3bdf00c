"""`mlgate schema`: print the JSON Schema of mlgate.yaml."""

from __future__ import annotations

import argparse

from mlgate.config import json_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    schema = json_schema()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(schema + "\n")
    else:
        print(schema)
    return 0
