"""`mlgate traffic`: bring up, reweight, inspect and stop the traffic split between a stable and a canary model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mlgate import gha
from mlgate.commands.arguments import (
    add_config_argument,
    add_operation_argument,
    add_tracking_argument,
    env_default,
    flag_default,
    require_operation,
)
from mlgate.config import DEFAULT_CONFIG, LoadedConfig, TrafficConfig, load_config
from mlgate.errors import InputError

if TYPE_CHECKING:
    from mlgate.traffic.stack import StackStatus

OPERATIONS = ("up", "set", "status", "down")


def _weight(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole percentage (0 to 100)") from None


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: use on or off")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_operation_argument(
        parser,
        OPERATIONS,
        "up: start two `mlgate serve` and nginx in front (the nginx backend); set: change the weights or "
        "the mirror; status: the split, the processes and their readiness; down: stop them all",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--stable",
        default=env_default("stable"),
        help="up: URI of the stable model (models:/NAME@champion); set: the stable weight in percent",
    )
    parser.add_argument(
        "--canary",
        default=env_default("canary"),
        help="up: URI of the canary model (models:/NAME@challenger); set: the canary weight in percent "
        "(the stable model takes the rest)",
    )
    parser.add_argument(
        "--weight",
        type=_weight,
        default=env_default("weight", "0"),  # a string default goes through `type` too
        help="up: the canary's weight in percent to start with (default 0)",
    )
    parser.add_argument(
        "--mirror",
        type=_switch,
        default=flag_default("mirror"),
        help="on: the canary also gets a copy of every request it does not answer, its answer dropped "
        "(a shadow step); off (default for up; set keeps the current)",
    )
    parser.add_argument("--port", type=int, default=None, help="up: nginx's port (default traffic.nginx.listen_port)")
    add_tracking_argument(parser)
    parser.add_argument("--json", action="store_true", help="status: print JSON")


def _traffic_config(path: str) -> tuple[TrafficConfig, Path, LoadedConfig | None]:
    """`traffic:` of mlgate.yaml, the project root and the config; without the default file, the defaults in this
    folder (and no config)."""
    if path == DEFAULT_CONFIG and not Path(path).exists():
        return TrafficConfig(), Path.cwd(), None
    loaded = load_config(path)
    return loaded.model.traffic, loaded.root, loaded


def _percent(option: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(
            f"{option} {value!r} is not a whole percentage", hint=f"pass {option} a whole number from 0 to 100"
        ) from None


def render_status(found: StackStatus) -> str:
    rows = [
        [
            upstream.role,
            upstream.model_uri,
            f"{upstream.port}",
            f"{upstream.pid}{'' if upstream.running else ' (gone)'}",
            "yes" if upstream.ready else "no",
            upstream.detail,
        ]
        for upstream in found.upstreams
    ]
    serving = (
        f"generation {found.served_generation}"
        if found.served_generation == found.generation
        else f"generation {found.served_generation} of {found.generation} recorded"
    )
    lines = [
        f"traffic on {found.url}: {found.split.describe()} (split by {found.split_by})",
        f"nginx: pid {found.nginx_pid}, {'running, ' + serving if found.nginx_running else 'not running'}",
        "",
        gha.plain_text(gha.md_table(["role", "model", "port", "pid", "ready", "serves"], rows)),
        f"state: {found.prefix / 'state.json'}",
    ]
    return "\n".join(lines)


def _up(args: argparse.Namespace, config: TrafficConfig, root: Path, loaded: LoadedConfig | None) -> int:
    from mlgate.extras import require
    from mlgate.traffic import Split
    from mlgate.traffic.nginx import Layout, Proxy, find_nginx, prefix_folder
    from mlgate.traffic.stack import up

    if config.backend != "nginx":
        raise InputError(
            f"`mlgate traffic up` starts the local nginx stack, and mlgate.yaml sets traffic.backend: {config.backend}",
            hint="with the command backend the router is yours: change its split with `mlgate traffic set --canary N`",
        )
    missing = [option for option in ("--stable", "--canary") if not getattr(args, option[2:])]
    if missing:
        raise InputError(
            f"`mlgate traffic up` needs {' and '.join(missing)}",
            hint="pass --stable models:/NAME@champion --canary models:/NAME@challenger",
        )
    settings = config.nginx
    # Before anything is installed or built: no project venv, no serving libraries, for a stack that cannot start.
    find_nginx(settings.binary)
    require("fastapi", "uvicorn", "prometheus_client", "mlflow")  # what the two `mlgate serve` need (serve extra)
    port = args.port if args.port is not None else settings.listen_port
    if not 0 < port < 65536:
        raise InputError(f"--port {port} is not a TCP port", hint="pass a port between 1 and 65535")
    split = Split.of(canary=args.weight, mirror=bool(args.mirror), base=None)
    proxy = Proxy.from_config(settings, port)
    python = None
    if loaded is not None:  # the models run in the project's environment, where it declares one
        from mlgate.traffic.stack import serving_python

        python = serving_python(loaded)
    found = up(
        binary=settings.binary,
        layout=Layout(prefix_folder(settings.prefix, root)),
        proxy=proxy,
        models={"stable": args.stable, "canary": args.canary},
        split=split,
        tracking_uri=args.tracking_uri,
        ready_timeout_s=settings.ready_timeout_s,
        python=python,
        max_body_bytes=loaded.model.serve.max_body_bytes if loaded is not None else None,
    )
    print(render_status(found))
    gha.set_outputs({"url": found.url, "stable-weight": split.stable, "canary-weight": split.canary})
    return 0


def run(args: argparse.Namespace) -> int:
    from mlgate.traffic import Split, backend_for
    from mlgate.traffic.nginx import Layout, prefix_folder
    from mlgate.traffic.stack import down, status

    require_operation(args, "traffic", OPERATIONS)
    config, root, loaded = _traffic_config(args.config)
    if args.operation == "up":
        return _up(args, config, root, loaded)
    if args.operation == "set":
        canary, stable = _percent("--canary", args.canary), _percent("--stable", args.stable)
        if canary is None and stable is None and args.mirror is None:
            raise InputError(
                "`mlgate traffic set` was given nothing to change", hint="pass --canary N and/or --mirror on|off"
            )
        backend = backend_for(config, root)
        split = Split.of(canary=canary, stable=stable, mirror=args.mirror, base=backend.current())
        applied = backend.apply(split)
        unchanged = "" if applied.changed else " (unchanged)"
        print(f"traffic ({backend.name}): {applied.split.describe()}{unchanged}: {applied.detail}")
        gha.set_outputs({"stable-weight": split.stable, "canary-weight": split.canary, "mirror": split.mirror})
        return 0
    if config.backend == "command":
        backend = backend_for(config, root)
        if args.operation == "down":
            print("traffic (command): the router is yours; nothing to stop (set --canary 0 to send it all to stable)")
            return 0
        current = backend.current()
        if args.json:
            print(json.dumps({"backend": "command", "split": current.to_json() if current else None}, indent=1))
        else:
            print(f"traffic (command): {current.describe() if current else 'no split applied yet'}")
        return 0
    layout = Layout(prefix_folder(config.nginx.prefix, root))
    if args.operation == "down":
        for line in down(layout):
            print(f"traffic down: {line}")
        return 0
    found = status(layout)
    if args.json:
        print(json.dumps(found.to_json(), indent=1))
    else:
        print(render_status(found))
    if not found.healthy:
        print(
            "traffic status: not healthy (a process is gone, a server is not ready, or nginx does not serve "
            "the recorded split)",
            file=sys.stderr,
        )
        return 1
    return 0
