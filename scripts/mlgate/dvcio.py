"""`dvc pull` for the gates that read versioned data (no pandas, so the train extra can use it)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlgate.config import LoadedConfig
from mlgate.errors import ToolError
from mlgate.extras import require
from mlgate.procio import stop_group

# Set by the shell when `dvc remote add` fails, so that its error is told apart from the pull's.
_REMOTE_FAILED = "remote-add-failed"


class Pull:
    """A `dvc pull` started in the background: the train and test-model gates set up MLflow and the project venv
    while it runs (it is another process). `wait()` raises its failure as a ToolError; `cancel()` stops it, for a
    gate that failed first (a wrong tracking URI still fails fast, not after the pull).

    Its output goes to files, not pipes, so nothing has to read it while it runs: no thread. The process is
    started here, in the gate's own thread (two threads starting processes at once can fail in CPython's
    vfork-based spawn with "[Errno 14] Bad address").
    """

    def __init__(self, config: LoadedConfig, names: list[str], remote_url: str | None = None) -> None:
        self.config = config
        self.paths = sorted({config.model.data.sources[n].path for n in names if n in config.model.data.sources})
        executable = shutil.which("dvc")
        if executable is None:
            # Else `python -m dvc` would fail with "No module named dvc" in the pull's output; this names the extra.
            require("dvc")
        dvc = shlex.join([executable] if executable else [sys.executable, "-m", "dvc"])
        self._folder = Path(tempfile.mkdtemp(prefix="mlgate-dvc-pull-"))
        # `remote_url` (the action's dvc-remote-url) becomes the default remote in the local, uncommitted DVC
        # config, so a CI variable can point the job at its bucket; then the pull, in the same process chain.
        script = f'exec {dvc} pull "$@"'
        if remote_url:
            script = (
                f'{dvc} remote add --local --force --default mlgate-ci "$MLGATE_DVC_REMOTE" >/dev/null'
                f" || {{ : > {shlex.quote(str(self._folder / _REMOTE_FAILED))}; exit 1; }}; {script}"
            )
        env = {**os.environ, "MLGATE_DVC_REMOTE": remote_url or ""}
        self._output = open(self._folder / "output", "w+b")  # closed by wait() or cancel()
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                ["/bin/sh", "-c", script, "sh", *self.paths],
                cwd=config.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # cancel() stops the whole chain (the shell and its dvc) at once
            )
        except OSError as exc:
            self._close()
            raise self._failure(
                f"cannot run dvc: {exc}", "install dvc (pip install 'mlgate[data]') or set data.dvc: false"
            ) from None

    def _failure(self, message: str, hint: str) -> ToolError:
        # Every dvc failure points at the `data.dvc` key that asked for the pull.
        return ToolError(message, hint=hint, file=str(self.config.path), line=self.config.line_of("data", "dvc"))

    def _close(self) -> None:
        self._output.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def wait(self) -> None:
        """Wait for the pull; a ToolError naming the command, its exit status and its last lines if it failed."""
        if self._process is None:
            raise RuntimeError("the pull was cancelled")
        returncode = self._process.wait()
        self._process = None
        self._output.seek(0)
        output = self._output.read().decode(errors="replace").strip()
        remote_failed = (self._folder / _REMOTE_FAILED).exists()
        self._close()
        if remote_failed:
            raise self._failure(
                f"cannot set the DVC remote to the given dvc-remote-url: {output[-400:]}",
                "check the dvc-remote-url input (a bucket URL or a directory)",
            )
        if returncode != 0:
            tail = "\n".join(output.splitlines()[-8:])
            raise self._failure(
                f"`dvc pull {' '.join(self.paths)}` failed (exit {returncode}) in {self.config.root}:\n{tail}",
                "check the DVC remote (`dvc remote list`) and its credentials, "
                "or pass --no-dvc-pull when the files are already present",
            )

    def cancel(self) -> None:
        """Stop the pull (its shell and dvc), for a gate that failed before waiting for it."""
        if self._process is None:
            return
        if self._process.poll() is None:
            stop_group(self._process, grace_s=30)
        self._process = None
        self._close()


@contextlib.contextmanager
def pulling(config: LoadedConfig, names: list[str], remote_url: str | None, *, enabled: bool) -> Iterator[None]:
    """Pull the files of sources `names` while the block runs (a gate's set-up), and wait for them after it; a
    block that fails stops the pull. Nothing when not `enabled` or when the project does not use DVC."""
    if not (enabled and config.model.data.dvc):
        yield
        return
    print("mlgate: dvc pull (data.dvc is true)", flush=True)
    pull = Pull(config, names, remote_url)
    try:
        yield
    except BaseException:
        pull.cancel()
        raise
    pull.wait()


def dvc_pull(config: LoadedConfig, names: list[str], remote_url: str | None = None) -> None:
    """Run `dvc pull` for the files of sources `names` in the project root; ToolError on failure."""
    Pull(config, names, remote_url).wait()
