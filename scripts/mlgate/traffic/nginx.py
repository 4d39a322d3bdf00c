"""The `nginx` traffic backend: Debian's nginx, run by mlgate in a prefix folder of its own, on loopback.

Every path nginx touches (config, pid, logs, temp folders) is under the prefix, so it runs beside a
system nginx and without root. A change renders a new config, checks it with `nginx -t`, swaps it in
and reloads gracefully (SIGHUP: new workers take new connections, old ones finish what they hold), then
waits until nginx itself answers with the new config's generation. A config nginx refuses never
replaces the one serving.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate.errors import InputError, ToolError
from mlgate.statefile import LOOPBACK, command_line, locked, read_state, runs, write_state
from mlgate.traffic import Applied, Split

if TYPE_CHECKING:
    from mlgate.config import NginxTrafficConfig

STATUS_PATH = "/_mlgate/traffic"  # answered by nginx itself: the generation and split of the config in force
MIRROR_PATH = "/_mlgate/mirror"
UPSTREAM_HEADER = "X-Mlgate-Upstream"  # on every answer: which model (stable or canary) answered it
MIRROR_HEADER = "X-Mlgate-Mirror"  # on the copies the mirror sends the canary
INSTALL_HINT = (
    "install nginx: `apt-get install -y nginx` on Debian or Ubuntu (`make venv` does it), `brew install nginx` "
    "on macOS; or set traffic.nginx.binary in mlgate.yaml to its path"
)
RELOAD_TIMEOUT_S = 15.0
START_TIMEOUT_S = 30.0
# Under uvicorn's keep-alive timeout (5 s): nginx drops an idle upstream connection before the server
# does, so a request never goes out on a connection the server is closing (a POST is not retried).
UPSTREAM_KEEPALIVE_S = 4

# Loopback probes never go through a proxy from the environment.
LOOPBACK_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Layout:
    """Where nginx's files live under the prefix."""

    prefix: Path

    @property
    def conf(self) -> Path:
        return self.prefix / "conf" / "nginx.conf"

    @property
    def candidate(self) -> Path:
        return self.prefix / "conf" / "nginx.conf.next"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def logs(self) -> Path:
        return self.prefix / "logs"

    @property
    def error_log(self) -> Path:
        return self.logs / "error.log"

    @property
    def access_log(self) -> Path:
        return self.logs / "access.log"

    @property
    def temp(self) -> Path:
        return self.prefix / "temp"

    @property
    def state(self) -> Path:
        return self.prefix / "state.json"

    def make(self) -> None:
        for folder in (self.conf.parent, self.logs, self.temp):
            folder.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Proxy:
    """The settings of the proxy fixed when the stack comes up (kept in the state file)."""

    listen_port: int
    split_by: str = "request"  # or "header"
    header: str = "X-User-ID"
    workers: int = 1
    max_body_mb: int = 16
    # Off: a reload's old workers close idle keep-alive connections, and a request a client sends on one at
    # that instant is lost; one connection per request makes every switch lose none.
    client_keepalive: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "listen_port": self.listen_port,
            "split_by": self.split_by,
            "header": self.header,
            "workers": self.workers,
            "max_body_mb": self.max_body_mb,
            "client_keepalive": self.client_keepalive,
        }

    @classmethod
    def from_config(cls, settings: NginxTrafficConfig, port: int | None = None) -> Proxy:
        """The proxy `traffic.nginx` declares, listening on `port` when given."""
        return cls(
            settings.listen_port if port is None else port,
            settings.split,
            settings.header,
            settings.workers,
            settings.max_body_mb,
            settings.client_keepalive,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Proxy:
        return cls(
            int(data["listen_port"]),
            str(data["split_by"]),
            str(data["header"]),
            int(data["workers"]),
            int(data["max_body_mb"]),
            bool(data.get("client_keepalive", False)),
        )


def quoted(path: Path) -> str:
    """A path as an nginx string (prefix_folder refuses the characters that would need escaping)."""
    return f'"{path}"'


def header_variable(header: str) -> str:
    """nginx's variable for a request header: X-User-ID -> $http_x_user_id."""
    return "$http_" + header.lower().replace("-", "_")


def render(proxy: Proxy, ports: dict[str, int], split: Split, generation: int, layout: Layout) -> str:
    """The whole nginx.conf for `split`, with every path under the prefix."""
    temp = layout.temp
    if proxy.split_by == "header":
        # Sticky: one user always meets the same model; a request without the header is split on its own.
        key_map = f'    map {header_variable(proxy.header)} $mlgate_split_key {{\n        "" $request_id;\n'
        key_map += f"        default {header_variable(proxy.header)};\n    }}\n"
        key = "$mlgate_split_key"
    else:
        key_map, key = "", "$request_id"
    if 0 < split.canary < 100:
        route = f'    split_clients "{key}" $mlgate_upstream {{\n        {split.canary}% canary;\n'
        route += "        * stable;\n    }\n"
    else:  # split_clients refuses a 0% share: one model takes every request
        only = "canary" if split.canary == 100 else "stable"
        route = f"    map $request_id $mlgate_upstream {{\n        default {only};\n    }}\n"
    status = json.dumps({"generation": generation, **split.to_json()})
    mirror = f"            mirror {MIRROR_PATH};\n            mirror_request_body on;\n" if split.mirror else ""
    upstreams = "".join(
        f"    upstream {role} {{\n        server {LOOPBACK}:{ports[role]};\n        keepalive 32;\n"
        f"        keepalive_timeout {UPSTREAM_KEEPALIVE_S}s;\n    }}\n"
        for role in ("stable", "canary")
    )
    body = f"{proxy.max_body_mb}m"
    return f"""# Written by `mlgate traffic` (generation {generation}): {split.describe()}.
# Every change is checked with `nginx -t` and put in force by a graceful reload; change the split with
# `mlgate traffic set`, the settings in mlgate.yaml (traffic.nginx), never this file.
daemon on;
worker_processes {proxy.workers};
worker_shutdown_timeout 60s;
pid {quoted(layout.pid_file)};
error_log {quoted(layout.error_log)} notice;

events {{
    worker_connections 1024;
}}

http {{
    log_format mlgate '$time_iso8601 $request_id $mlgate_upstream $upstream_addr $status $request_time "$request"';
    access_log {quoted(layout.access_log)} mlgate;
    server_tokens off;
    client_body_temp_path {quoted(temp / "client_body")};
    proxy_temp_path {quoted(temp / "proxy")};
    fastcgi_temp_path {quoted(temp / "fastcgi")};
    uwsgi_temp_path {quoted(temp / "uwsgi")};
    scgi_temp_path {quoted(temp / "scgi")};
    # Request bodies stay in memory and answers are not spooled to disk: no worker writes a temp file
    # (which, with nginx started as root, runs as nobody and may not reach the prefix).
    client_max_body_size {body};
    client_body_buffer_size {body};
    proxy_max_temp_file_size 0;

{upstreams}
    # The request id the models log: the client's X-Request-ID, else nginx's own, the same for a mirror copy.
    map $http_x_request_id $mlgate_request_id {{
        "" $request_id;
        default $http_x_request_id;
    }}
{key_map}{route}
    server {{
        listen {LOOPBACK}:{proxy.listen_port};
        keepalive_timeout {"75s" if proxy.client_keepalive else "0"};

        location / {{
{mirror}            proxy_pass http://$mlgate_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $mlgate_request_id;
            add_header {UPSTREAM_HEADER} $mlgate_upstream always;
        }}

        # The shadow copy: the canary's answer is read and dropped, never sent to the client. A request the
        # canary answers anyway is not copied, so the canary sees each request once.
        location = {MIRROR_PATH} {{
            internal;
            if ($mlgate_upstream = canary) {{
                return 204;
            }}
            proxy_pass http://canary$request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $mlgate_request_id;
            proxy_set_header {MIRROR_HEADER} 1;
            # The client has its answer and may hang up before the canary answers the copy: finish the copy anyway.
            proxy_ignore_client_abort on;
            proxy_connect_timeout 2s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
        }}

        location = {STATUS_PATH} {{
            default_type application/json;
            return 200 '{status}';
        }}
    }}
}}
"""


def find_nginx(binary: str) -> str:
    """The nginx executable to run, or a ToolError with the install hint."""
    found = shutil.which(binary)
    if found is not None:
        return found
    hint = INSTALL_HINT
    if "/" not in binary:
        elsewhere = [f"{folder}/{binary}" for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin")]
        present = next((path for path in elsewhere if os.access(path, os.X_OK)), None)
        if present is not None:
            hint += f"; it is at {present}, in a folder not on PATH: add {Path(present).parent} to PATH"
    raise ToolError(f"nginx is not installed: {binary!r} is not on PATH", hint=hint)


def _run_nginx(nginx: str, layout: Layout, *args: str) -> tuple[int, str]:
    """Run nginx with the prefix's paths; (exit code, its output).

    The output goes through a file, not a pipe: a daemonizing nginx must not keep our pipe open.
    """
    layout.make()
    output = layout.logs / "nginx-command.log"
    with output.open("w+", encoding="utf-8", errors="replace") as sink:
        try:
            done = subprocess.run(
                [nginx, "-p", f"{layout.prefix}/", "-e", str(layout.error_log), *args],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=START_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ToolError(f"`{nginx} {' '.join(args)}` did not finish within {START_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise ToolError(f"cannot run {nginx}: {exc.strerror or exc}", hint=INSTALL_HINT) from None
        sink.seek(0)
        return done.returncode, sink.read()


def nginx_problem(output: str) -> str:
    """The lines of nginx's output that say what is wrong (its [emerg], [alert] and [crit] messages)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    serious = [line for line in lines if any(level in line for level in ("[emerg]", "[alert]", "[crit]"))]
    return "; ".join(serious or lines[-2:]) or "(no output)"


def check_config(nginx: str, layout: Layout, path: Path) -> None:
    """`nginx -t` on the config at `path`, or a ToolError quoting nginx's reason."""
    code, output = _run_nginx(nginx, layout, "-t", "-q", "-c", str(path))
    if code != 0:
        raise ToolError(
            f"nginx refused the new configuration ({path}); the previous one keeps serving: {nginx_problem(output)}",
            hint="nothing changed; the refused file stays next to the serving one for a look",
        )


def served_generation(port: int) -> int | None:
    """The generation of the config nginx answers with on `port` now, None when it does not answer."""
    try:
        with LOOPBACK_HTTP.open(f"http://{LOOPBACK}:{port}{STATUS_PATH}", timeout=1.0) as answer:
            return int(json.loads(answer.read())["generation"])
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
        return None


def wait_generation(port: int, generation: int, seconds: float) -> bool:
    """Wait until nginx answers with `generation` twice in a row (the old workers stop accepting by then)."""
    deadline = time.monotonic() + seconds
    seen = 0
    while time.monotonic() < deadline:
        seen = seen + 1 if served_generation(port) == generation else 0
        if seen >= 2:
            return True
        time.sleep(0.02)
    return False


def _log_since(layout: Layout, offset: int) -> str:
    try:
        with layout.error_log.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _log_size(layout: Layout) -> int:
    try:
        return layout.error_log.stat().st_size
    except OSError:
        return 0


def start(nginx: str, layout: Layout, proxy: Proxy, ports: dict[str, int], split: Split, generation: int) -> int:
    """Start nginx with `split` in force; its master's pid once it answers on the listen port."""
    text = render(proxy, ports, split, generation, layout)
    layout.make()
    layout.candidate.write_text(text, encoding="utf-8")
    check_config(nginx, layout, layout.candidate)
    os.replace(layout.candidate, layout.conf)
    layout.pid_file.unlink(missing_ok=True)
    offset = _log_size(layout)
    code, output = _run_nginx(nginx, layout, "-c", str(layout.conf))
    if code != 0:
        raise ToolError(
            f"nginx did not start on {LOOPBACK}:{proxy.listen_port}: {nginx_problem(output)}",
            hint=f"its log is {layout.error_log}",
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    pid = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid = int(layout.pid_file.read_text(encoding="utf-8").strip())
        if pid and runs(pid, "nginx") and wait_generation(proxy.listen_port, generation, 1.0):
            return pid
        time.sleep(0.05)
    problem = nginx_problem(_log_since(layout, offset))
    raise ToolError(
        f"nginx did not answer on {LOOPBACK}:{proxy.listen_port} within {START_TIMEOUT_S:g} s: {problem}",
        hint=f"its log is {layout.error_log}",
    )


def accepting_workers(master: int) -> list[int]:
    """The master's worker processes that still take new connections (not yet "shutting down")."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(master):
            title = command_line(int(entry.name))
            if "worker process" in title and "shutting down" not in title:
                found.append(int(entry.name))
    return found


def wait_retired(workers: list[int], seconds: float) -> bool:
    """Wait until each of `workers` has stopped taking connections: gone, or titled "shutting down" (nginx
    sets that title as it closes its listening sockets on a graceful reload)."""
    deadline = time.monotonic() + seconds
    while True:
        if not [pid for pid in workers if runs(pid, "worker process") and "shutting down" not in command_line(pid)]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def reload(
    nginx: str, layout: Layout, pid: int, proxy: Proxy, ports: dict[str, int], split: Split, generation: int
) -> None:
    """Put `split` in force in the running nginx `pid`: check, swap the file, reload, wait for the generation."""
    text = render(proxy, ports, split, generation, layout)
    layout.make()
    layout.candidate.write_text(text, encoding="utf-8")
    check_config(nginx, layout, layout.candidate)
    previous = layout.conf.read_text(encoding="utf-8") if layout.conf.exists() else None
    os.replace(layout.candidate, layout.conf)
    offset = _log_size(layout)
    # Until the old workers stop taking connections, a request may still meet the old split: the change is in
    # force once nginx answers with the new generation and every old worker is shutting down.
    old_workers = accepting_workers(pid)
    os.kill(pid, signal.SIGHUP)  # nginx -s reload sends the same signal
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    if wait_generation(proxy.listen_port, generation, RELOAD_TIMEOUT_S) and wait_retired(
        old_workers, max(0.0, deadline - time.monotonic())
    ):
        return
    if previous is not None:  # the file on disk keeps saying what serves
        layout.conf.write_text(previous, encoding="utf-8")
    raise ToolError(
        f"nginx (pid {pid}) did not put the new configuration in force within {RELOAD_TIMEOUT_S:g} s; the previous "
        f"one keeps serving: {nginx_problem(_log_since(layout, offset))}",
        hint=f"see {layout.error_log}",
    )


@dataclass
class NginxTraffic:
    """The split of the nginx stack whose files are under `layout.prefix` (brought up by mlgate.traffic.stack)."""

    binary: str
    layout: Layout
    name: str = field(default="nginx")

    @classmethod
    def from_config(cls, config: NginxTrafficConfig, root: Path) -> NginxTraffic:
        return cls(config.binary, Layout(prefix_folder(config.prefix, root)))

    def state(self) -> dict[str, Any]:
        """The stack's state file, or an InputError when no stack is up under the prefix."""
        state = read_state(self.layout.state)
        if state is None:
            raise InputError(
                f"no traffic stack is up in {self.layout.prefix} (no {self.layout.state.name} there)",
                hint="start one with `mlgate traffic up --stable URI --canary URI`",
            )
        return state

    def current(self) -> Split | None:
        state = read_state(self.layout.state)
        if state is None or "split" not in state:
            return None
        return Split.from_json(state["split"], self.layout.state)

    def apply(self, split: Split) -> Applied:
        with locked(self.layout.prefix):
            state = self.state()
            try:
                proxy = Proxy.from_json(state["proxy"])
                ports = {role: int(state["upstreams"][role]["port"]) for role in ("stable", "canary")}
                pid = int(state["nginx"]["pid"] or 0)
                generation = int(state["generation"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ToolError(
                    f"{self.layout.state}: the traffic state file is incomplete ({exc!r})",
                    hint="`mlgate traffic down`, then `mlgate traffic up`",
                ) from None
            if not runs(pid, "nginx", str(self.layout.conf)):
                raise ToolError(
                    f"the nginx of the traffic stack in {self.layout.prefix} (pid {pid}) is not running",
                    hint="`mlgate traffic down`, then `mlgate traffic up` again",
                )
            before = Split.from_json(state["split"], self.layout.state)
            if before == split and served_generation(proxy.listen_port) == generation:
                return Applied(split, False, f"already in force (nginx config generation {generation})")
            generation += 1
            reload(find_nginx(self.binary), self.layout, pid, proxy, ports, split, generation)
            state |= {"split": split.to_json(), "generation": generation, "updated_at": time.time()}
            write_state(self.layout.state, state)
        return Applied(split, before != split, f"nginx reloaded gracefully (config generation {generation})")


UNSAFE_IN_PREFIX = set("\"'$;{}\\#") | {"\n", "\r", "\t"}


def prefix_folder(prefix: str, root: Path) -> Path:
    """The prefix as an absolute path (a relative one is relative to the project root).

    Its paths go into nginx.conf as quoted strings, where these characters would need escaping or
    start a variable; a prefix holding one is refused rather than escaped."""
    folder = (root / prefix).absolute()
    unsafe = sorted(UNSAFE_IN_PREFIX & set(str(folder)))
    if unsafe:
        raise InputError(
            f"traffic.nginx.prefix {folder}: holds {' '.join(repr(char) for char in unsafe)}, which nginx.conf "
            "would read as syntax",
            hint="set traffic.nginx.prefix in mlgate.yaml to a folder whose path has none of them",
        )
    return folder
