"""The registry gate: register, promote and roll back model versions with MLflow 3 aliases, audited.

Aliases, never stages: `@challenger` is the registered release waiting for production, `@champion`
the one production serves, `@previous` the champion before it. Every operation that moves aliases
runs under a lock (a tag on the registered model) and records its intended move on the registered model
before the first write (mlgate.registry.intent): when the server stops answering between two writes, the next
operation (or `mlgate registry status`, or `mlgate rollout abort`) finishes the move and records it, so the
registry is never left half-changed. Every operation writes an audit record (mlgate.registry.audit).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from mlgate.config import LoadedConfig, PerformanceMetric
from mlgate.errors import ConfigError, GateFailed, InputError, ToolError
from mlgate.mlflowio import MlflowHandle, reach, redact
from mlgate.redaction import redact as redact_text
from mlgate.registry import audit
from mlgate.registry.audit import AuditRecord, Who
from mlgate.registry.intent import INTENT_TAG, LOCK_TAG, Intent, Lock, Moves, delete_how

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
LOCK_STALE_S = 15 * 60
LOCK_SETTLE_S = 0.3
# What register copies from the candidate's run onto the version: the lineage train wrote.
LINEAGE_PREFIXES = ("mlgate.git.", "mlgate.dvc.", "mlgate.config_sha256", "mlgate.profile", "mlgate.seed", "mlgate.pr")
METRIC_TAG = "mlgate.metrics"  # JSON of the model tests' holdout metrics: candidate and champion, same rows


@dataclass(kw_only=True)
class Decision:
    """What an operation did (or refused to do), and why."""

    operation: str
    model: str
    version: str
    decision: str
    reason: str
    aliases_before: dict[str, str] = field(default_factory=dict)
    aliases_after: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    audit_run_id: str = ""

    @property
    def changed(self) -> bool:
        return self.aliases_before != self.aliases_after


def model_name(loaded: LoadedConfig) -> str:
    settings = loaded.model.registry
    if settings.model:
        return settings.model
    tests = loaded.model.model_tests
    if tests is not None and tests.baseline is not None:
        return tests.baseline.model
    return loaded.model.project


def champion_alias(loaded: LoadedConfig) -> str:
    tests = loaded.model.model_tests
    return tests.baseline.alias if tests is not None and tests.baseline is not None else CHAMPION


def promotion_metric(loaded: LoadedConfig) -> tuple[PerformanceMetric, float]:
    rule = loaded.model.registry.promotion
    baseline = loaded.model.model_tests.baseline if loaded.model.model_tests else None
    metric: PerformanceMetric = rule.metric or (baseline.promotion_metric if baseline else "roc_auc")
    margin = rule.margin if rule.margin is not None else (baseline.promotion_margin if baseline else 0.0)
    return metric, margin


class Registry:
    """One registered model on one MLflow server; every call bounded and retried (mlflowio.MlflowHandle)."""

    def __init__(
        self, client: MlflowClient, uri: str, name: str, audit_experiment: str, champion: str = CHAMPION
    ) -> None:
        if "'" in name or not name.strip():
            raise ConfigError(
                f"registered model name {name!r} is not usable (empty, or holds a quote)",
                hint="set registry.model in mlgate.yaml to a plain name, e.g. fraud-detection",
            )
        self.server = MlflowHandle(client, uri)
        self.name = name
        self.audit_experiment = audit_experiment
        self.lock_id = uuid.uuid4().hex
        self.champion = champion  # model_tests.baseline.alias: the alias production serves and test-model reads
        self.intent: Intent | None = None  # this operation's own, from its first alias write to its audit record
        self.intent_recorded = False
        self.intent_unknown = False  # its write failed: whether it landed is not known

    @property
    def client(self) -> MlflowClient:
        return self.server.client

    @property
    def uri(self) -> str:
        return self.server.uri

    def call(self, what: str, call: Callable[[], Any]) -> Any:
        return self.server.call(what, call)

    # -- reading ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if _not_found(exc):
                return False
            raise ToolError(f"reading registered model {self.name!r}: {self.server.scrub(str(exc))[:300]}") from None
        return True

    def require(self) -> None:
        if not self.call("reading the registered model", self.exists):
            raise InputError(
                f"registered model {self.name!r} does not exist on {redact(self.uri)}",
                hint="register a release first (mlgate registry register), or fix registry.model in mlgate.yaml",
            )

    def aliases(self) -> dict[str, str]:
        """alias -> version of the registered model (empty when it does not exist yet)."""
        from mlflow.exceptions import MlflowException

        def read() -> dict[str, str]:
            try:
                model = self.client.get_registered_model(self.name)
            except MlflowException as exc:
                if _not_found(exc):
                    return {}
                raise
            return {str(alias): str(version) for alias, version in dict(model.aliases or {}).items()}

        return dict(self.call("reading the aliases", read))

    def version(self, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        def get() -> Any:
            try:
                return self.client.get_model_version(self.name, version)
            except MlflowException as exc:
                if _not_found(exc) or "INVALID_PARAMETER" in str(getattr(exc, "error_code", "")):
                    return None
                raise

        found = self.call(f"reading version {version}", get)
        if found is None:
            raise InputError(
                f"{self.name} has no version {version!r}",
                hint=f"mlgate registry status {self.name} lists the versions the aliases point at",
            )
        return found

    # -- writing ---------------------------------------------------------------------------------
    def record(self, decision: Decision, who: Who, *, intent: Intent | None = None) -> Decision:
        """Write the audit record of `decision` (tied to `intent`, or to this operation's own alias move)."""
        own = self.intent if self.intent is not None and decision.decision == self.intent.decision else None
        tied = intent or own
        record = AuditRecord(
            operation=decision.operation,
            model=self.name,
            version=decision.version,
            decision=decision.decision,
            reason=decision.reason,
            who=who,
            aliases_before=decision.aliases_before,
            aliases_after=decision.aliases_after,
            evidence=decision.evidence,
            intent=tied.id if tied is not None else "",
        )
        decision.audit_run_id = self.call(
            "writing the audit record", lambda: audit.write(self.client, self.audit_experiment, record)
        )
        if own is not None:
            self.intent_recorded = True  # from here on, finishing the intent only means clearing it
        if decision.version and decision.decision != "unchanged":
            prefix = f"mlgate.audit.{decision.operation}"
            tags = {
                f"{prefix}.decision": decision.decision,
                f"{prefix}.reason": decision.reason[:4000],
                f"{prefix}.by": who.actor,
                f"{prefix}.approvers": ",".join(who.approvers),
                f"{prefix}.at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                f"{prefix}.run_url": who.run_url,
                f"{prefix}.audit_run": decision.audit_run_id,
            }
            for key, value in tags.items():
                tag = partial(self.client.set_model_version_tag, self.name, decision.version, key, redact_text(value))
                self.call("tagging the version", tag)
        return decision

    def _tags(self) -> dict[str, str]:
        model = self.call("reading the lock", lambda: self.client.get_registered_model(self.name))
        return {str(k): str(v) for k, v in dict(model.tags or {}).items()}

    @contextmanager
    def locked(self, operation: str, who: Who, say: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the registered model's lock for one operation: a second operation that finds it stops. An
        unfinished intent found here is finished first (recover), each line of what was done given to `say`."""
        tell = say or _say
        tags = self._tags()
        held = Lock.parse(self.name, tags.get(LOCK_TAG))
        found = Intent.parse(self.name, tags.get(INTENT_TAG))
        # A lock whose holder left its intent behind belongs to an operation that stopped between two writes (a
        # live one racing this recovery writes the same aliases: recovery only ever rolls an intent forward).
        abandoned = held is not None and found is not None and held.id == found.id
        if held and held.id != self.lock_id and not abandoned and time.time() - held.at < LOCK_STALE_S:
            raise GateFailed(
                f"{self.name}: another {held.operation} by {held.actor} is in progress (since "
                f"{time.strftime('%H:%M:%S', time.gmtime(held.at))} UTC); this {operation} stops without changing "
                "anything",
                hint="let it finish, then run again; a lock older than 15 minutes is taken over",
            )
        mine = json.dumps({"id": self.lock_id, "operation": operation, "actor": who.actor, "at": time.time()})
        self.call("taking the lock", lambda: self.client.set_registered_model_tag(self.name, LOCK_TAG, mine))
        time.sleep(LOCK_SETTLE_S)  # a racing writer's tag lands in this window; whoever reads its own id goes on
        tags = self._tags()
        winner = Lock.parse(self.name, tags.get(LOCK_TAG))
        if not winner or winner.id != self.lock_id:
            raise GateFailed(
                f"{self.name}: another {operation} took the lock at the same moment; this one stops without "
                "changing anything",
                hint="run it again once the other one has finished",
            )
        try:
            found = Intent.parse(self.name, tags.get(INTENT_TAG))
            if found is not None:
                for line in self.recover(found, operation, who):
                    tell(line)
            yield
        except ToolError as exc:
            pending = self.intent
            if pending is None:
                raise
            if self.intent_recorded:
                raise ToolError(
                    f"{exc.message}; the {pending.operation}'s alias moves are done and in the audit log",
                    hint="nothing needs doing: the next registry operation or `mlgate registry status` clears what "
                    "it left (its intent and lock)",
                ) from None
            # The server stopped answering between two writes of the move: it stays recorded for the next one.
            raise ToolError(
                f"{exc.message}; the intended move ({_aliases_text(pending.before)} -> "
                f"{_aliases_text(pending.after)}) is recorded on {self.name} (tag {INTENT_TAG})",
                hint="once the server answers, the next registry operation, `mlgate registry status` or `mlgate "
                "rollout abort` finishes the move and records it (there is no alias to set yourself)",
            ) from None
        finally:
            self._release()

    def _release(self) -> None:
        """The lock, then (once recorded) this operation's intent: a fault between the two leaves the intent,
        which the next operation clears, never a lock alone."""
        pending, recorded, unknown = self.intent, self.intent_recorded, self.intent_unknown
        self.intent, self.intent_recorded, self.intent_unknown = None, False, False

        def release() -> None:
            current = Lock.parse(self.name, self._tags().get(LOCK_TAG))
            if current and current.id == self.lock_id:
                self.client.delete_registered_model_tag(self.name, LOCK_TAG)

        try:
            self.call("releasing the lock", release)
        except ToolError:
            if pending is not None:
                _say(
                    f"could not release the lock of {self.name}; the next registry operation or `mlgate registry "
                    "status` takes it over with the recorded intent"
                )
            elif unknown:
                _say(
                    f"could not release the lock of {self.name}; if the server recorded the intended move, the next "
                    "registry operation or `mlgate registry status` takes the lock over with it, else it expires after "
                    "15 minutes"
                )
            else:
                _say(f"could not release the lock of {self.name}; it expires after 15 minutes")
        if pending is not None and recorded:
            try:
                self._clear_intent(pending.id)
            except ToolError:
                _say(
                    f"could not clear the intent of this {pending.operation} (tag {INTENT_TAG} of {self.name}); it "
                    "is recorded, and the next registry operation or `mlgate registry status` clears it"
                )

    def _clear_intent(self, intent_id: str) -> None:
        def clear() -> None:
            current = Intent.parse(self.name, self._tags().get(INTENT_TAG))
            if current is not None and current.id == intent_id:
                self.client.delete_registered_model_tag(self.name, INTENT_TAG)

        self.call("clearing the intent", clear)

    def _write_alias(self, alias: str, version: str | None) -> None:
        """One write of an alias move: @alias to `version`, or deleted (None)."""
        if version is None:
            self.call(f"deleting @{alias}", partial(self.client.delete_registered_model_alias, self.name, alias))
        else:
            move = partial(self.client.set_registered_model_alias, self.name, alias, version)
            self.call(f"moving @{alias} to version {version}", move)

    def move(self, moves: Moves, done: Decision, who: Who) -> dict[str, str]:
        """Set (version) or delete (None) each alias in order, under the lock, after recording the intended
        move (the operation `done` will record): a fault between two writes leaves the intent, which the next
        operation finishes. Returns the aliases after. `done.aliases_before` are the aliases its operation read
        under the same lock."""
        before = done.aliases_before
        intent = Intent.of(self.lock_id, done.operation, done.version, done.decision, done.reason, who, before, moves)
        record = partial(self.client.set_registered_model_tag, self.name, INTENT_TAG, intent.to_tag())
        try:
            self.call("recording the intended move", record)
        except ToolError as exc:
            self.intent_unknown = True
            raise ToolError(
                f"{self.name}: {exc.message}; no alias was moved",
                hint="run it again once the server answers; if the server recorded the intended move (tag "
                f"{INTENT_TAG}) before it stopped answering, the next registry operation or `mlgate registry status` "
                "finishes it",
            ) from None
        self.intent = intent
        made = 0
        try:
            for alias, version in moves:
                if version is not None or alias in before:
                    self._write_alias(alias, version)
                made += 1
        except ToolError as exc:
            raise ToolError(f"{self.name}: {exc.message}; the {done.operation} stopped after {made} of "
                            f"{len(moves)} alias moves") from None  # fmt: skip
        return dict(intent.after)

    def recover(self, found: Intent, during: str, who: Who) -> list[str]:
        """Finish the unfinished intent `found` (under the lock): roll it forward to its `after` (the move was
        decided; each write can be repeated) and record it as recovered, unless its operation had recorded it
        already; then clear it. What was found and done, a line each."""
        lines = [f"{self.name}: found {found.describe()}, stopped between two of its writes"]
        try:
            recorded = self.call(
                "looking for its audit record",
                lambda: audit.recorded(self.client, self.audit_experiment, found.id),
            )
            if recorded:
                lines.append(
                    f"its alias moves were done and recorded (audit run {recorded}); cleared its intent and lock"
                )
            else:
                current = self.aliases()
                moved = []
                for alias, version in found.moves:
                    if current.get(alias) == version:
                        continue
                    self._write_alias(alias, version)
                    moved.append(f"@{alias} {current.get(alias, '(none)')} -> {version or '(none)'}")
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(found.at))
                decision = Decision(
                    operation=found.operation,
                    model=self.name,
                    version=found.version,
                    decision=found.decision,
                    reason=f"recovered: {found.reason} (interrupted at {when} UTC; finished by {who.actor}'s {during})",
                    aliases_before=found.before,
                    aliases_after=self.aliases(),
                    evidence={"recovered": {"by": who.actor, "during": during, "found": current, "moved": moved}},
                )
                self.record(decision, found.who, intent=found)
                lines.append(
                    f"finished it ({', '.join(moved) or 'every alias was already in place'}) and recorded it as "
                    f"recovered (audit run {decision.audit_run_id}); cleared its intent and lock"
                )
            self._clear_intent(found.id)
        except ToolError as exc:
            raise ToolError(
                f"{self.name}: found {found.describe()} and could not finish it: {exc.message}",
                hint=f"it stays recorded (tag {INTENT_TAG}): run `mlgate registry status` again once the server "
                f"answers; if it keeps failing, set the aliases to {_aliases_text(found.after)} by hand and "
                f"{delete_how(self.name, INTENT_TAG)}",
            ) from None
        return lines

    def heal(self, who: Who, during: str) -> list[str]:
        """Finish an unfinished intent on the registered model, if there is one; what was found and done."""
        if not self.call("reading the registered model", self.exists):
            return []
        if Intent.parse(self.name, self._tags().get(INTENT_TAG)) is None:
            return []
        lines: list[str] = []
        try:
            with self.locked(during, who, say=lines.append):
                pass
        except GateFailed as exc:  # its operation (or another recovery) still holds the lock: leave it be
            lines.append(f"{exc.message.split('; this ', 1)[0]}; its intent is left to it")
        return lines


def open_registry(loaded: LoadedConfig, uri: str, name: str | None = None) -> Registry:
    """The registered model `name` (default: registry.model of `loaded`) on the server at `uri`, which has answered
    once (mlflowio.reach: a server that is down fails here, within its bound)."""
    client = reach(uri)
    import mlflow

    # The registry resolves a models:/ source through the global tracking URI, not the client's.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return Registry(
        client, uri, name or model_name(loaded), loaded.model.registry.audit_experiment, champion_alias(loaded)
    )


def _say(line: str) -> None:
    print(f"mlgate registry: {line}")


def _aliases_text(aliases: dict[str, str]) -> str:
    return ", ".join(f"@{alias} {version}" for alias, version in sorted(aliases.items())) or "no aliases"


def _not_found(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower()
