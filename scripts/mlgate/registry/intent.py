"""The registry's intents: an alias move recorded on the registered model before its first write, so that an
operation interrupted between two writes (the server stopped answering) is finished by whoever comes next.

An intent is one registered-model tag (`mlgate.intent`, JSON) written under the operation's lock, after the
operation has decided (the promotion rule passed, the rollback was asked for) and before the first alias moves;
it is removed once the moves and the audit record are done. Recovery rolls it forward to `after`: the move had
been decided and approved, every write in it (set or delete one alias) can be repeated without harm, and going
back would need a second decision that nobody took. The tags mlgate reads back are parsed as strictly as
`mlgate.yaml`: one that is not what mlgate wrote is bad input naming the tag and the fix, never a traceback.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from mlgate.errors import InputError
from mlgate.registry.audit import Who

INTENT_TAG = "mlgate.intent"
LOCK_TAG = "mlgate.lock"
REASON_LIMIT = 1000

Moves = list[tuple[str, str | None]]


def delete_how(model: str, tag: str) -> str:
    return (
        f"delete the tag {tag} of the registered model {model}: on its page in MLflow's UI (Tags), or "
        f"MlflowClient().delete_registered_model_tag({model!r}, {tag!r})"
    )


def delete_hint(model: str, tag: str) -> str:
    return f"check the aliases in MLflow's UI (the registered model's page), then {delete_how(model, tag)}"


def _bad(model: str, tag: str, what: str) -> InputError:
    return InputError(
        f"registered model {model}: the tag {tag} is not one mlgate wrote ({what})", hint=delete_hint(model, tag)
    )


def _time(model: str, tag: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(model, tag, f"its time {value!r} is not a number")
    return float(value)


def _object(model: str, tag: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _bad(model, tag, f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _bad(model, tag, f"a JSON {type(value).__name__}, not an object")
    return value


def _text(model: str, tag: str, value: dict[str, Any], key: str) -> str:
    found = value.get(key)
    if not isinstance(found, str) or not found:
        raise _bad(model, tag, f"{key!r} is {found!r}, not a text")
    return found


def _aliases(model: str, tag: str, value: dict[str, Any], key: str) -> dict[str, str]:
    found = value.get(key)
    if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
        raise _bad(model, tag, f"{key!r} is not an object of alias to version")
    return dict(found)


@dataclass(frozen=True)
class Lock:
    """Who holds the registered model's lock, and since when (seconds since the epoch)."""

    id: str
    operation: str
    actor: str
    at: float

    @classmethod
    def parse(cls, model: str, raw: str | None) -> Lock | None:
        if not raw:
            return None
        value = _object(model, LOCK_TAG, raw)
        return cls(
            id=_text(model, LOCK_TAG, value, "id"),
            operation=str(value.get("operation") or "operation"),
            actor=str(value.get("actor") or "?"),
            at=_time(model, LOCK_TAG, value.get("at")),
        )


@dataclass(kw_only=True)
class Intent:
    """One decided alias move: `moves` in order take the aliases from `before` to `after` (None deletes)."""

    id: str  # the lock id of the operation that wrote it
    operation: str  # register | promote | rollback
    version: str
    decision: str  # what the operation records once done: registered | promoted | rolled-back
    reason: str
    who: Who
    before: dict[str, str]
    after: dict[str, str]
    moves: Moves
    at: float

    @classmethod
    def of(cls, lock_id: str, operation: str, version: str, decision: str, reason: str, who: Who,
           before: dict[str, str], moves: Moves) -> Intent:  # fmt: skip
        after = dict(before)
        for alias, target in moves:
            if target is None:
                after.pop(alias, None)
            else:
                after[alias] = target
        return cls(id=lock_id, operation=operation, version=version, decision=decision,
                   reason=reason[:REASON_LIMIT], who=who, before=dict(before), after=after, moves=list(moves),
                   at=time.time())  # fmt: skip

    def to_tag(self) -> str:
        return json.dumps({**asdict(self), "moves": [list(move) for move in self.moves]}, sort_keys=True)

    @classmethod
    def parse(cls, model: str, raw: str | None) -> Intent | None:
        if not raw:
            return None
        tag = INTENT_TAG
        value = _object(model, tag, raw)
        moves: Moves = []
        listed = value.get("moves")
        for move in listed if isinstance(listed, list) else [listed]:
            if not (
                isinstance(move, list)
                and len(move) == 2
                and isinstance(move[0], str)
                and (move[1] is None or isinstance(move[1], str))
            ):
                raise _bad(model, tag, f"'moves' holds {move!r}, not [alias, version or null]")
            moves.append((move[0], move[1]))
        who = value.get("who")
        if not isinstance(who, dict) or not isinstance(who.get("actor"), str):
            raise _bad(model, tag, "'who' is not an object with an actor")
        return cls(
            id=_text(model, tag, value, "id"),
            operation=_text(model, tag, value, "operation"),
            version=_text(model, tag, value, "version"),
            decision=_text(model, tag, value, "decision"),
            reason=str(value.get("reason") or ""),
            who=Who(
                who["actor"],
                [str(a) for a in who.get("approvers") or [] if isinstance(a, str)],
                str(who.get("run_url") or ""),
                str(who.get("commit") or ""),
                str(who.get("repository") or ""),
                str(who.get("environment") or ""),
            ),
            before=_aliases(model, tag, value, "before"),
            after=_aliases(model, tag, value, "after"),
            moves=moves,
            at=_time(model, tag, value.get("at")),
        )

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at))
        return f"an unfinished {self.operation} of version {self.version} by {self.who.actor} (started {when} UTC)"
