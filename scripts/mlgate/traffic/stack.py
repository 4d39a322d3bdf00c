"""The local stack of `mlgate traffic up`: two `mlgate serve` processes on loopback ports and nginx in front.

Each process runs in a process group of its own, so `down` (from any later mlgate process) ends it
and whatever it started; the state file under the prefix records the ports and pids as each is
started, so a failure halfway through is cleaned up rather than left half-deployed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate.config import LoadedConfig
from mlgate.errors import InputError, ToolError
from mlgate.procio import stop_group
from mlgate.statefile import (
    LOOPBACK,
    free_port,
    locked,
    port_in_use,
    read_state,
    require_free_port,
    runs,
    write_state,
)
from mlgate.traffic import Split
from mlgate.traffic.nginx import LOOPBACK_HTTP, Layout, Proxy, find_nginx, served_generation, start

ROLES = ("stable", "canary")
SERVER_GRACE_S = 30.0  # uvicorn's graceful shutdown answers the requests in flight first
NGINX_GRACE_S = 15.0
LOG_TAIL_LINES = 5


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """One model server of the stack, as `status` finds it."""

    role: str
    model_uri: str
    port: int
    pid: int
    running: bool
    ready: bool
    detail: str  # the model and version it serves, or why it is not ready
    log: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StackStatus:
    """The stack under a prefix: the split in force, nginx, and both model servers."""

    prefix: Path
    url: str
    split: Split
    split_by: str
    generation: int
    served_generation: int | None  # what nginx answers now; equal to `generation` when the state file is in force
    nginx_pid: int
    nginx_running: bool
    upstreams: list[Upstream]

    @property
    def healthy(self) -> bool:
        serving = self.nginx_running and self.served_generation == self.generation
        return serving and all(upstream.ready for upstream in self.upstreams)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": str(self.prefix),
            "url": self.url,
            "split": self.split.to_json(),
            "split_by": self.split_by,
            "generation": self.generation,
            "served_generation": self.served_generation,
            "nginx": {"pid": self.nginx_pid, "running": self.nginx_running},
            "upstreams": {upstream.role: upstream.to_json() for upstream in self.upstreams},
            "healthy": self.healthy,
        }


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"


def readiness(port: int) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of the server's GET /ready; (0, {}) when nothing answers."""
    try:
        with LOOPBACK_HTTP.open(f"http://{LOOPBACK}:{port}/ready", timeout=2.0) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, {}
    except (OSError, ValueError):
        return 0, {}


def _spawn_server(
    role: str,
    uri: str,
    port: int,
    log: Path,
    tracking_uri: str | None,
    python: Path | None,
    max_body_bytes: int | None = None,
) -> subprocess.Popen[bytes]:
    """`mlgate serve` for one role: in mlgate's own venv, or with `python` (the project venv, where the model's
    own libraries are), mlgate's package put on its path; `max_body_bytes` is serve.max_body_bytes (None: the
    server's default)."""
    # The tracking URI goes through the environment, not the command line every user of `ps` reads.
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLGATE_INPUT_")}
    if python is not None:
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding the `mlgate` package
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env["VIRTUAL_ENV"] = str(python.parent.parent)
        env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    interpreter = str(python) if python is not None else sys.executable
    argv = [interpreter, "-m", "mlgate.cli", "serve", "--model", uri, "--host", LOOPBACK, "--port", str(port)]
    if max_body_bytes is not None:
        argv += ["--max-body-bytes", str(max_body_bytes)]
    with log.open("ab") as sink:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _wait_ready(state: dict[str, Any], servers: dict[str, subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = set(servers)
    reasons: dict[str, str] = {}
    while waiting:
        for role in sorted(waiting):
            upstream = state["upstreams"][role]
            log = Path(upstream["log"])
            code = servers[role].poll()
            if code is not None:
                raise ToolError(
                    f"the {role} server ({upstream['model_uri']}) exited with code {code} before it was ready: "
                    f"{_log_tail(log)}",
                    hint=f"its whole log is {log}",
                )
            status, body = readiness(int(upstream["port"]))
            if status == 200:
                waiting.discard(role)
                continue
            reason = str(body.get("reason", "starting"))
            reasons[role] = reason
            if status == 503 and not reason.startswith("loading"):
                raise InputError(
                    f"the {role} model {upstream['model_uri']} cannot be served: {reason}",
                    hint=f"pass --{role} a URI that resolves in the tracking store (--tracking-uri or "
                    f"MLFLOW_TRACKING_URI); the server's log is {log}",
                )
        if not waiting:
            return
        if time.monotonic() >= deadline:
            late = ", ".join(f"{role}: {reasons.get(role, 'starting')}" for role in sorted(waiting))
            raise ToolError(
                f"the model servers were not ready within {timeout_s:g} s ({late})",
                hint="raise traffic.nginx.ready_timeout_s in mlgate.yaml for a model that loads slowly; the logs "
                f"are in {Path(state['upstreams'][sorted(waiting)[0]]['log']).parent}",
            )
        time.sleep(0.2)


def _stop_recorded(layout: Layout, state: dict[str, Any]) -> list[str]:
    """Stop every process the state file records that still runs what mlgate started; what was done, in words."""
    done: list[str] = []
    nginx_pid = int((state.get("nginx") or {}).get("pid") or 0)
    if not nginx_pid:  # an `up` that failed after nginx wrote its pid file, before the state file had it
        with contextlib.suppress(OSError, ValueError):
            nginx_pid = int(layout.pid_file.read_text(encoding="utf-8").strip())
    if runs(nginx_pid, "nginx", str(layout.conf)):
        # SIGQUIT is nginx's graceful shutdown: the workers finish the requests they hold.
        graceful = stop_group(nginx_pid, first=signal.SIGQUIT, grace_s=NGINX_GRACE_S)
        done.append(f"nginx (pid {nginx_pid}) stopped{'' if graceful else ' (killed after a graceful quit timed out)'}")
    for role in ROLES:
        upstream = (state.get("upstreams") or {}).get(role)
        if not upstream:
            continue
        pid, port = int(upstream.get("pid") or 0), int(upstream.get("port") or 0)
        if runs(pid, "mlgate", "serve", f"--port {port}"):
            graceful = stop_group(pid, first=signal.SIGTERM, grace_s=SERVER_GRACE_S)
            how = "" if graceful else " (killed after a graceful shutdown timed out)"
            done.append(f"{role} server (pid {pid}, port {port}) stopped{how}")
    return done


def _recorded_pids_running(layout: Layout, state: dict[str, Any]) -> list[str]:
    running = []
    nginx_pid = int((state.get("nginx") or {}).get("pid") or 0)
    if runs(nginx_pid, "nginx", str(layout.conf)):
        running.append(f"nginx pid {nginx_pid}")
    for role, upstream in (state.get("upstreams") or {}).items():
        pid, port = int(upstream.get("pid") or 0), int(upstream.get("port") or 0)
        if runs(pid, "mlgate", "serve", f"--port {port}"):
            running.append(f"{role} server pid {pid}")
    return running


# What `mlgate serve` needs in a project venv beside the model's own libraries (the serve extra's, and the
# core's that `mlgate.cli` imports); onnxruntime too where the compress gate may have made the model an ONNX
# variant.
SERVE_REQUIREMENTS = ["fastapi>=0.110", "uvicorn>=0.29", "prometheus-client>=0.20", "pydantic>=2.7", "pyyaml>=6"]
ONNX_SERVE_REQUIREMENTS = ["onnxruntime>=1.20,<2"]


def serving_python(loaded: LoadedConfig) -> Path | None:
    """The interpreter the servers run the models with: the project venv (`environment.install`), with the
    serving libraries added, when there is one; None (mlgate's own) otherwise."""
    from mlgate.projenv import ensure_gate_packages, ensure_project_env

    python = ensure_project_env(loaded)
    if python is None:
        return None
    wanted = SERVE_REQUIREMENTS + (ONNX_SERVE_REQUIREMENTS if loaded.model.compress is not None else [])
    ensure_gate_packages(loaded, python, wanted, "serve")
    return python


def up(
    *,
    binary: str,
    layout: Layout,
    proxy: Proxy,
    models: dict[str, str],
    split: Split,
    tracking_uri: str | None,
    ready_timeout_s: float,
    python: Path | None = None,
    max_body_bytes: int | None = None,
) -> StackStatus:
    """Start a stable and a canary server on free loopback ports, wait for both /ready, then nginx in front."""
    nginx = find_nginx(binary)
    with locked(layout.prefix):
        existing = read_state(layout.state)
        if existing is not None:
            running = _recorded_pids_running(layout, existing)
            if running:
                raise InputError(
                    f"a traffic stack is already up in {layout.prefix} ({', '.join(running)})",
                    hint="change its split with `mlgate traffic set`, or stop it with `mlgate traffic down` first",
                )
            layout.state.unlink()  # left by processes that are gone (a crash, a reboot)
        require_free_port(proxy.listen_port, "traffic.nginx.listen_port in mlgate.yaml")
        layout.make()
        ports = dict(zip(ROLES, _distinct_ports(len(ROLES)), strict=True))
        state: dict[str, Any] = {
            "backend": "nginx",
            "generation": 1,
            "split": split.to_json(),
            "proxy": proxy.to_json(),
            "nginx": {"pid": None},
            "upstreams": {},
            "started_at": time.time(),
        }
        servers: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for role in ROLES:
                log = layout.logs / f"{role}.log"
                servers[role] = _spawn_server(
                    role, models[role], ports[role], log, tracking_uri, python, max_body_bytes=max_body_bytes
                )
                state["upstreams"][role] = {
                    "model_uri": models[role],
                    "port": ports[role],
                    "pid": servers[role].pid,
                    "log": str(log),
                }
            write_state(layout.state, state)  # from here on a later `mlgate traffic down` finds them
            _wait_ready(state, servers, ready_timeout_s)
            state["nginx"] = {"pid": start(nginx, layout, proxy, ports, split, 1)}
            write_state(layout.state, state)
        except BaseException:
            _stop_recorded(layout, state)
            for server in servers.values():  # reap them: this process is their parent
                if server.poll() is None:
                    server.kill()
                server.wait()
            layout.state.unlink(missing_ok=True)
            raise
    return status(layout)


def status(layout: Layout) -> StackStatus:
    state = read_state(layout.state)
    if state is None:
        raise InputError(
            f"no traffic stack is up in {layout.prefix} (no {layout.state.name} there)",
            hint="start one with `mlgate traffic up --stable URI --canary URI`",
        )
    try:
        proxy = Proxy.from_json(state["proxy"])
        nginx_pid = int(state["nginx"]["pid"] or 0)
        generation = int(state["generation"])
        recorded = {role: state["upstreams"][role] for role in ROLES}
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolError(
            f"{layout.state}: the traffic state file is incomplete ({exc!r})",
            hint="`mlgate traffic down`, then `mlgate traffic up`",
        ) from None
    upstreams = []
    for role, upstream in recorded.items():
        pid, port = int(upstream["pid"]), int(upstream["port"])
        running = runs(pid, "mlgate", "serve", f"--port {port}")
        code, body = readiness(port) if running else (0, {})
        if code == 200:
            detail = f"{body.get('model')} v{body.get('version')}"
        else:
            detail = str(body.get("reason") or ("not answering" if running else "not running"))
        upstreams.append(
            Upstream(
                role=role,
                model_uri=str(upstream["model_uri"]),
                port=port,
                pid=pid,
                running=running,
                ready=code == 200,
                detail=detail,
                log=str(upstream["log"]),
            )
        )
    nginx_running = runs(nginx_pid, "nginx", str(layout.conf))
    return StackStatus(
        prefix=layout.prefix,
        url=f"http://{LOOPBACK}:{proxy.listen_port}",
        split=Split.from_json(state["split"], layout.state),
        split_by=proxy.split_by if proxy.split_by == "request" else f"header {proxy.header}",
        generation=generation,
        served_generation=served_generation(proxy.listen_port) if nginx_running else None,
        nginx_pid=nginx_pid,
        nginx_running=nginx_running,
        upstreams=upstreams,
    )


def down(layout: Layout) -> list[str]:
    """Stop nginx and both servers of the stack under `layout.prefix` and free their ports; what was done."""
    with locked(layout.prefix):
        state = read_state(layout.state)
        if state is None:
            return [f"no traffic stack is up in {layout.prefix}; nothing to stop"]
        done = _stop_recorded(layout, state) or ["its processes had already ended"]
        ports = [int((state.get("proxy") or {}).get("listen_port") or 0)]
        ports += [int(upstream.get("port") or 0) for upstream in (state.get("upstreams") or {}).values()]
        deadline = time.monotonic() + 5.0
        busy = [port for port in ports if port and port_in_use(port)]
        while busy and time.monotonic() < deadline:
            time.sleep(0.1)
            busy = [port for port in busy if port_in_use(port)]
        layout.state.unlink(missing_ok=True)
        layout.pid_file.unlink(missing_ok=True)
    if busy:
        done.append(f"ports still in use by other processes: {', '.join(map(str, busy))}")
    return done
