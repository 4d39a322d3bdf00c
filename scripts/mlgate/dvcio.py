"""`dvc pull` for the gates that read versioned data (no pandas, so the train extra can use it)."""

from __future__ import annotations

import contextlib
import os
import re
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

SITE_CACHE_ENV = "DVC_SITE_CACHE_DIR"
_SITE_CACHE_KEY = re.compile(r"^\s*site_cache_dir\s*=", re.MULTILINE)


def site_cache_env(root: Path, env: dict[str, str]) -> dict[str, str]:
    """`env`, for a dvc that mlgate starts in the project at `root`, with DVC's site cache kept inside the project.

    DVC keeps a site cache (its file-hash state and index, per repository) in /var/tmp/dvc on Linux: outside the
    project, shared by every user and left behind. mlgate points DVC_SITE_CACHE_DIR at the repository's own
    .dvc/tmp/site_cache (ignored by the .gitignore `dvc init` writes), or, outside a DVC repository, at a folder in
    the runner's temp folder. A DVC_SITE_CACHE_DIR the user set, or a core.site_cache_dir in the project's DVC
    config, wins."""
    if os.environ.get(SITE_CACHE_ENV):
        env[SITE_CACHE_ENV] = os.environ[SITE_CACHE_ENV]
        return env
    repository = next((folder for folder in (root, *root.parents) if (folder / ".dvc").is_dir()), None)
    if repository is not None:
        for name in ("config", "config.local"):
            config = repository / ".dvc" / name
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if config.is_file() and _SITE_CACHE_KEY.search(config.read_text(encoding="utf-8")):
                    return env
        env[SITE_CACHE_ENV] = str(repository / ".dvc" / "tmp" / "site_cache")
    else:
        temp = os.environ.get("RUNNER_TEMP", "")
        base = Path(temp if os.path.isdir(temp) else tempfile.gettempdir())
        env[SITE_CACHE_ENV] = str(base / "mlgate-dvc-site-cache")
    return env


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
        env = site_cache_env(config.root.resolve(), {**os.environ, "MLGATE_DVC_REMOTE": remote_url or ""})
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
