"""`mlgate serve`: one MLflow model behind FastAPI and uvicorn, with readiness, Prometheus metrics and JSON logs."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlgate.errors import InputError

if TYPE_CHECKING:
    from mlgate.serve.app import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
FACTORY = "mlgate.serve.app:app_from_env"


@dataclass(frozen=True)
class Listen:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1


def check_port(host: str, port: int) -> None:
    """An InputError naming the port when nothing could listen there (in use, or not an address of this machine).

    Checked before uvicorn starts, so the user reads one line with a fix rather than uvicorn's log.
    """
    if not 0 < port < 65536:
        raise InputError(f"--port {port} is not a TCP port", hint="pass a port between 1 and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT port is free
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(
                    f"port {port} on {host} is in use by another process",
                    hint=f"pass another --port, or stop the process listening on it (`ss -ltnp 'sport = :{port}'`)",
                ) from None
            raise InputError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                hint="pass --host an address of this machine (127.0.0.1, or 0.0.0.0 for every interface) "
                "and a --port above 1023 unless running as root",
            ) from None


def serve(settings: Settings, listen: Listen) -> None:
    """Run the server until it is stopped (SIGINT or SIGTERM: uvicorn finishes the requests in flight first)."""
    import uvicorn

    from mlgate.serve.app import SETTINGS_ENV
    from mlgate.serve.metrics import MULTIPROC_ENV

    if listen.workers < 1:
        raise InputError(f"--workers {listen.workers}: at least one worker is needed", hint="pass --workers 1 or more")
    check_port(listen.host, listen.port)
    os.environ[SETTINGS_ENV] = settings.to_env()
    metrics_dir = None
    if listen.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # Each worker is a process of its own; their metrics meet in files in this folder (metrics.py).
        metrics_dir = tempfile.mkdtemp(prefix="mlgate-serve-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            FACTORY,
            factory=True,
            host=listen.host,
            port=listen.port,
            workers=listen.workers,
            access_log=False,  # one JSON line per prediction instead (mlgate.serve.app.log)
            log_level="info",
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)


def __getattr__(name: str) -> Any:
    # `Settings` lives with the app (FastAPI); imported on first use, so `mlgate.serve.batching` and the CLI's
    # parser load without the serve extra.
    if name == "Settings":
        from mlgate.serve.app import Settings

        return Settings
    raise AttributeError(name)


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Listen", "Settings", "check_port", "serve"]
