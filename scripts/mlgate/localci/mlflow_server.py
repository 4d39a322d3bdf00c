"""A throwaway MLflow tracking server (sqlite backend, proxied artifacts) on 127.0.0.1 for local workflow runs.

`mlflow server` forks uvicorn workers and job consumers: it starts in a process group of its own,
and stopping it ends the whole group, so no worker outlives the run that started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from mlgate.errors import ToolError
from mlgate.mlflowio import no_telemetry
from mlgate.procio import stop_group
from mlgate.statefile import free_port

INSTALL_HINT = "pip install 'mlgate[ci]' (it brings MLflow's server), or pass --tracking-uri of a running server"


def find_mlflow() -> str | None:
    """The `mlflow` executable of this interpreter's environment, else the first on PATH."""
    beside = Path(sys.executable).with_name("mlflow")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mlflow")


class MlflowServer:
    """`MlflowServer(folder).start()` ... `.stop()`, or as a context manager; `.uri` once started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.store = root / "mlflow.db"
        self.log = root / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> MlflowServer:
        executable = find_mlflow()
        if executable is None:
            raise ToolError(
                "a local MLflow server needs the `mlflow` package, which is not installed", hint=INSTALL_HINT
            )
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            executable, "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.store}",
            "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        # The job consumers are of no use to a tracking-only server and add processes to end.
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        no_telemetry(env)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()  # the workers it forked, if any
                raise ToolError(f"the MLflow server exited at start:\n{self._log_tail()}", hint=f"see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:  # noqa: S310 (loopback http)
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise ToolError(
            f"the MLflow server was not healthy after {timeout_s:.0f}s:\n{self._log_tail()}", hint=f"see {self.log}"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        stop_group(self.process, grace_s=20)
        self.process = None

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
