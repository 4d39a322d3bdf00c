"""The `command` traffic backend: a command of the user's applies the weights to any router.

The command gets the split three ways, so a one-line script and a program both read it easily: as
its last three arguments (`STABLE CANARY MIRROR`, e.g. `90 10 off`) and in MLGATE_STABLE_WEIGHT,
MLGATE_CANARY_WEIGHT and MLGATE_MIRROR (`on`/`off`). It runs without a shell, from the project root,
in a process group of its own, so a timeout ends it and everything it started. It must exit 0 only
once the router has the weights, and applying the same weights twice must be harmless.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlgate.errors import ToolError
from mlgate.procio import stop_group
from mlgate.statefile import locked, read_state, write_state
from mlgate.traffic import Applied, Split

if TYPE_CHECKING:
    from mlgate.config import CommandTrafficConfig

STABLE_ENV = "MLGATE_STABLE_WEIGHT"
CANARY_ENV = "MLGATE_CANARY_WEIGHT"
MIRROR_ENV = "MLGATE_MIRROR"
OUTPUT_TAIL_CHARS = 600
KILL_GRACE_S = 2.0


def _tail(output: str) -> str:
    text = " | ".join(line.strip() for line in output.strip().splitlines()[-5:] if line.strip())
    return text[-OUTPUT_TAIL_CHARS:] if text else "(no output)"


@dataclass
class CommandTraffic:
    """A split applied by running `argv` with the weights; the state file records the last one applied."""

    argv: list[str]
    cwd: Path
    timeout_s: float
    state_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = "command"

    @classmethod
    def from_config(cls, config: CommandTrafficConfig, root: Path) -> CommandTraffic:
        return cls(shlex.split(config.run), root, config.timeout_s, root / config.state_file)

    @property
    def shown(self) -> str:
        return shlex.join(self.argv)

    def current(self) -> Split | None:
        state = read_state(self.state_path)
        if state is None or "split" not in state:
            return None
        return Split.from_json(state["split"], self.state_path)

    def apply(self, split: Split) -> Applied:
        mirror = "on" if split.mirror else "off"
        argv = [*self.argv, str(split.stable), str(split.canary), mirror]
        env = {
            **os.environ,
            **self.env,
            STABLE_ENV: str(split.stable),
            CANARY_ENV: str(split.canary),
            MIRROR_ENV: mirror,
        }
        with locked(self.state_path.parent):
            before = self.current()
            started = time.monotonic()
            try:
                process = subprocess.Popen(
                    argv,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    start_new_session=True,  # its own process group: a timeout ends whatever it started too
                )
            except OSError as exc:
                raise ToolError(
                    f"cannot start the traffic command `{self.shown}`: {exc.strerror or exc}",
                    hint="traffic.command.run in mlgate.yaml must start with an executable: a path relative to the "
                    "project root (e.g. `sh deploy/kserve-canary.sh NAME NAMESPACE`) or a command on PATH",
                ) from None
            try:
                output, _ = process.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                stop_group(process.pid, first=signal.SIGTERM, grace_s=KILL_GRACE_S)
                output = ""
                try:
                    output, _ = process.communicate(timeout=KILL_GRACE_S)
                except subprocess.TimeoutExpired:  # a grandchild that left the group still holds the pipe
                    process.kill()
                raise ToolError(
                    f"the traffic command `{self.shown}` did not finish within {self.timeout_s:g} s and was killed "
                    f"(with its process group); the weights {split.describe()} may be half applied: {_tail(output)}",
                    hint="make the command return once the router has the weights, or raise "
                    "traffic.command.timeout_s; then run `mlgate traffic set` again",
                ) from None
            code = process.returncode
            if code != 0:
                raise ToolError(
                    f"the traffic command `{self.shown}` failed with exit code {code} applying "
                    f"{split.describe()}: {_tail(output)}",
                    hint="the recorded split is unchanged; fix the command (it is run as "
                    f"`{self.shown} STABLE CANARY MIRROR`, with {STABLE_ENV}, {CANARY_ENV}, {MIRROR_ENV} set) "
                    "and run `mlgate traffic set` again",
                )
            seconds = time.monotonic() - started
            write_state(
                self.state_path,
                {"backend": self.name, "command": self.shown, "split": split.to_json(), "applied_at": time.time()},
            )
        return Applied(split, before != split, f"`{self.shown}` applied it in {seconds:.1f} s: {_tail(output)}")
