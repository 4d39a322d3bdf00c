"""`dvc pull` for the gates that read versioned data (no pandas, so the train extra can use it)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from mlgate.config import LoadedConfig
from mlgate.errors import ToolError
from mlgate.extras import require


def dvc_pull(config: LoadedConfig, names: list[str], remote_url: str | None = None) -> None:
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
        completed = subprocess.run(
            [*command, "pull", *paths], cwd=config.root, capture_output=True, text=True, check=False
        )
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
