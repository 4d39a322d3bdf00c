"""`mlgate schema`: print the JSON Schema of mlgate.yaml."""

from __future__ import annotations

import argparse

from mlgate.commands.arguments import require_output
from mlgate.config import json_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    output = require_output("--output", args.output) if args.output else None
    schema = json_schema()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(schema + "\n", encoding="utf-8")
    else:
        print(schema)
    return 0
