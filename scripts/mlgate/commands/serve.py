"""`mlgate serve`: serve one MLflow model over HTTP (MLflow's /invocations, /predict, /health, /ready, /metrics)."""

from __future__ import annotations

import argparse
import sys

from mlgate.commands.arguments import add_tracking_argument, env_default
from mlgate.errors import InputError
from mlgate.serve.batching import DEFAULT_MAX_ROWS, SMALL_REQUEST_ROWS
from mlgate.serve.payload import DEFAULT_MAX_BODY_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=env_default("model-uri"),
        help="MLflow URI of the model: models:/<name>@<alias>, models:/<name>/<version>, models:/<model_id> "
        "or runs:/<run_id>/<path>",
    )
    parser.add_argument(
        "--host",
        default=env_default("host", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--port", type=int, default=int(env_default("port", "8080") or 8080), help="default 8080")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env_default("workers", "1") or 1),
        help="uvicorn worker processes, each with its own copy of the model (default 1)",
    )
    parser.add_argument(
        "--batch-max-rows",
        type=int,
        default=int(env_default("batch-max-rows") or DEFAULT_MAX_ROWS),
        help=f"most rows one model call gathers from small requests (up to {SMALL_REQUEST_ROWS} rows) that arrive "
        f"while the model is busy (default {DEFAULT_MAX_ROWS}; 0: predict each request alone, for a model whose "
        "answer for a row depends on the other rows)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(env_default("max-body-bytes") or DEFAULT_MAX_BODY_BYTES),
        help=f"largest request body in bytes; a larger one is answered 413 before it is read whole (default "
        f"{DEFAULT_MAX_BODY_BYTES}, 1 MiB, nginx's client_max_body_size; `mlgate traffic up` passes "
        "serve.max_body_bytes of mlgate.yaml)",
    )
    add_tracking_argument(parser)
    parser.add_argument(
        "--name",
        default=env_default("name"),
        help="the model label of the metrics and logs (default: the registered model's name, or the URI's)",
    )


def run(args: argparse.Namespace) -> int:
    from mlgate.mlflowio import redact
    from mlgate.serve import Listen, Settings, serve

    if not args.model:
        raise InputError(
            "no model to serve", hint="pass --model models:/<name>@<alias> (or a version, a run or a model id)"
        )
    if args.batch_max_rows < 0:
        raise InputError(
            f"--batch-max-rows {args.batch_max_rows} is negative", hint="pass 0 (no batching) or a number of rows"
        )
    if args.max_body_bytes < 1:
        raise InputError(
            f"--max-body-bytes {args.max_body_bytes} is below 1", hint="pass the largest body to accept, in bytes"
        )
    settings = Settings(
        model_uri=args.model,
        tracking_uri=args.tracking_uri,
        name=args.name,
        batch_max_rows=args.batch_max_rows,
        max_body_bytes=args.max_body_bytes,
    )
    listen = Listen(host=args.host, port=args.port, workers=args.workers)
    store = f" from {redact(args.tracking_uri)}" if args.tracking_uri else ""
    print(
        f"mlgate serve: {args.model}{store} on http://{listen.host}:{listen.port} "
        f"({listen.workers} worker{'s' if listen.workers > 1 else ''}); GET /ready says when it is loaded",
        file=sys.stderr,
        flush=True,
    )
    serve(settings, listen)
    return 0
