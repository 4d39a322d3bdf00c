"""Traffic between a stable and a canary model: one interface (weights, mirror, current split) over two backends.

`nginx` is the embedded router mlgate runs itself on loopback (mlgate.traffic.nginx, mlgate.traffic.stack);
`command` hands the weights to a command of the user's, which applies them to any router (KServe,
Istio, Argo Rollouts; mlgate.traffic.command). Both keep the split in a JSON state file, so a
later `mlgate` process (the next rollout step) reads what the previous one set, not its memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlgate.errors import InputError, ToolError

if TYPE_CHECKING:
    from mlgate.config import TrafficConfig

WEIGHT_HINT = "give --canary alone (the stable model takes the rest), or --stable and --canary summing to 100"


def _check_weight(role: str, weight: object) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise InputError(f"the {role} weight {weight!r} is not a whole percentage from 0 to 100", hint=WEIGHT_HINT)
    return weight


@dataclass(frozen=True)
class Split:
    """Percent of the requests each model answers (whole numbers 0..100, summing to 100), and whether the
    canary also gets a copy of every request whose answer is thrown away (a shadow step)."""

    stable: int
    canary: int
    mirror: bool = False

    def __post_init__(self) -> None:
        _check_weight("stable", self.stable)
        _check_weight("canary", self.canary)
        if self.stable + self.canary != 100:
            raise InputError(
                f"the weights stable {self.stable} and canary {self.canary} sum to {self.stable + self.canary}, "
                "not 100",
                hint=WEIGHT_HINT,
            )

    @classmethod
    def of(
        cls, *, canary: int | None = None, stable: int | None = None, mirror: bool | None = None, base: Split | None
    ) -> Split:
        """The split a command line asks for: a weight given alone leaves the rest to the other model; what is
        not given at all (weights, mirror) stays as in `base`, the current split (or 100/0 without mirror)."""
        current = base if base is not None else cls(100, 0)
        if canary is not None:
            _check_weight("canary", canary)
        if stable is not None:
            _check_weight("stable", stable)
        if canary is None and stable is None:
            canary, stable = current.canary, current.stable
        elif stable is None:
            assert canary is not None
            stable = 100 - canary
        elif canary is None:
            canary = 100 - stable
        return cls(stable, canary, current.mirror if mirror is None else mirror)

    def to_json(self) -> dict[str, Any]:
        return {"stable": self.stable, "canary": self.canary, "mirror": self.mirror}

    @classmethod
    def from_json(cls, data: Any, source: Path) -> Split:
        try:
            return cls(int(data["stable"]), int(data["canary"]), bool(data["mirror"]))
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise ToolError(
                f"{source}: the recorded split is unreadable ({exc})",
                hint="set the weights again with `mlgate traffic set --canary N`",
            ) from None

    def describe(self) -> str:
        return f"stable {self.stable}% / canary {self.canary}%, mirror {'on' if self.mirror else 'off'}"


@dataclass(frozen=True)
class Applied:
    """The outcome of one `apply`: the split now in force, whether anything changed, and what was done."""

    split: Split
    changed: bool
    detail: str


class TrafficBackend(Protocol):
    """Where the split lives. `apply` is idempotent: applying the split in force again changes nothing."""

    name: str

    def apply(self, split: Split) -> Applied:
        """Put `split` in force, or raise (an MlgateError) leaving the previous split in force."""
        ...

    def current(self) -> Split | None:
        """The split in force as the state file records it; None when none was ever applied."""
        ...


def backend_for(config: TrafficConfig, root: Path) -> TrafficBackend:
    """The backend `traffic:` in mlgate.yaml declares, with its paths relative to the project `root`."""
    if config.backend == "command":
        from mlgate.traffic.command import CommandTraffic

        assert config.command is not None  # the config's validator requires it for this backend
        return CommandTraffic.from_config(config.command, root)
    from mlgate.traffic.nginx import NginxTraffic

    return NginxTraffic.from_config(config.nginx, root)


__all__ = ["Applied", "Split", "TrafficBackend", "backend_for"]
