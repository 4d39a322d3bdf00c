"""`dvc pull` for the gates that read versioned data (no pandas, so the train extra can use it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable

from mlgate.config import LoadedConfig
from mlgate.errors import ToolError
from mlgate.extras import require


def dvc_pull(
    config: LoadedConfig,
    names: list[str],
    remote_url: str | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> None:
    """Run `dvc pull` for the files of sources `names` in the project root; ToolError on failure.

    `remote_url` (the action's dvc-remote-url) becomes the default remote in the local, uncommitted
    DVC config, so a CI variable can point the job at its bucket.
    """
    paths = sorted({config.model.data.sources[n].path for n in names if n in config.model.data.sources})

    def failure(message: str, hint: str) -> ToolError:
        # Every dvc failure points at the `data.dvc` key that asked for the pull.
        return ToolError(message, hint=hint, file=str(config.path), line=config.line_of("data", "dvc"))

    executable = shutil.which("dvc")
    if executable is None:
        # Else `python -m dvc` would fail with "No module named dvc" in the pull's output; this names the extra.
        require("dvc")
    command = [executable] if executable else [sys.executable, "-m", "dvc"]
    try:
        if remote_url:
            subprocess.run(
                [*command, "remote", "add", "--local", "--force", "--default", "mlgate-ci", remote_url],
                cwd=config.root,
                capture_output=True,
                text=True,
                check=True,
            )
        process = subprocess.Popen(
            [*command, "pull", *paths], cwd=config.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if on_start is not None:
            on_start(process)
        stdout, stderr = process.communicate()
        completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    except subprocess.CalledProcessError as exc:
        raise failure(
            f"cannot set the DVC remote to the given dvc-remote-url: {exc.stderr.strip()[-400:]}",
            "check the dvc-remote-url input (a bucket URL or a directory)",
        ) from None
    except OSError as exc:
        raise failure(
            f"cannot run dvc: {exc}",
            "install dvc (pip install 'mlgate[data]') or set data.dvc: false",
        ) from None
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-8:])
        raise failure(
            f"`dvc pull {' '.join(paths)}` failed (exit {completed.returncode}) in {config.root}:\n{tail}",
            "check the DVC remote (`dvc remote list`) and its credentials, "
            "or pass --no-dvc-pull when the files are already present",
        )


class BackgroundPull:
    """`dvc_pull` in a thread, so that a gate sets up MLflow and its venv meanwhile (the pull is another
    process): `wait()` joins it and raises what it raised; `cancel()` stops the dvc process, for a gate that
    failed first (an unreachable server must still fail fast, not after the pull)."""

    def __init__(self, config: LoadedConfig, names: list[str], remote_url: str | None = None) -> None:
        self._error: BaseException | None = None
        self._process: subprocess.Popen[str] | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(config, names, remote_url), daemon=True)
        self._thread.start()

    def _started(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        if self._cancelled.is_set():
            process.terminate()

    def _run(self, config: LoadedConfig, names: list[str], remote_url: str | None) -> None:
        try:
            dvc_pull(config, names, remote_url, on_start=self._started)
        except BaseException as exc:  # raised again by wait(), in the gate's own thread
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        self._cancelled.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        self._thread.join(timeout=30)
