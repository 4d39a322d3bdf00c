"""The registry gate: register, promote and roll back model versions with MLflow 3 aliases, audited.

Aliases, never stages: `@challenger` is the registered release waiting for production, `@champion`
the one production serves, `@previous` the champion before it. Every operation that moves aliases
runs under a lock (a tag on the registered model) and as one transaction: when any step after the
first move fails, the moves are undone, so the registry is never left half-changed. Every operation
writes an audit record (mlgate.registry.audit).
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

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
LOCK_TAG = "mlgate.lock"
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
        if not self.call("reading the registered model", self.exists):
            return {}
        model = self.call("reading the aliases", lambda: self.client.get_registered_model(self.name))
        return {str(alias): str(version) for alias, version in dict(model.aliases or {}).items()}

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
    def record(self, decision: Decision, who: Who) -> Decision:
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
        )
        decision.audit_run_id = self.call(
            "writing the audit record", lambda: audit.write(self.client, self.audit_experiment, record)
        )
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

    @contextmanager
    def locked(self, operation: str, who: Who) -> Iterator[None]:
        """Hold the registered model's lock for one operation: a second operation that finds it stops."""
        tags = self.call("reading the lock", lambda: dict(self.client.get_registered_model(self.name).tags or {}))
        held = _lock_of(tags.get(LOCK_TAG))
        if held and held["id"] != self.lock_id and time.time() - float(held.get("at", 0)) < LOCK_STALE_S:
            raise GateFailed(
                f"{self.name}: another {held.get('operation', 'operation')} by {held.get('actor', '?')} is in "
                f"progress (since {time.strftime('%H:%M:%S', time.gmtime(float(held.get('at', 0))))} UTC); "
                f"this {operation} stops without changing anything",
                hint="let it finish, then run again; a lock older than 15 minutes is taken over",
            )
        mine = json.dumps({"id": self.lock_id, "operation": operation, "actor": who.actor, "at": time.time()})
        self.call("taking the lock", lambda: self.client.set_registered_model_tag(self.name, LOCK_TAG, mine))
        time.sleep(LOCK_SETTLE_S)  # a racing writer's tag lands in this window; whoever reads its own id goes on
        tags = self.call("reading the lock", lambda: dict(self.client.get_registered_model(self.name).tags or {}))
        winner = _lock_of(tags.get(LOCK_TAG))
        if not winner or winner["id"] != self.lock_id:
            raise GateFailed(
                f"{self.name}: another {operation} took the lock at the same moment; this one stops without "
                "changing anything",
                hint="run it again once the other one has finished",
            )
        try:
            yield
        finally:

            def release() -> None:
                current = _lock_of(dict(self.client.get_registered_model(self.name).tags or {}).get(LOCK_TAG))
                if current and current["id"] == self.lock_id:
                    self.client.delete_registered_model_tag(self.name, LOCK_TAG)

            try:
                self.call("releasing the lock", release)
            except ToolError:
                print(f"mlgate registry: could not release the lock of {self.name}; it expires after 15 minutes")

    def move(self, moves: list[tuple[str, str | None]]) -> dict[str, str]:
        """Set (version) or delete (None) each alias in order, as one transaction: a failure undoes the
        moves already made and raises. Returns the aliases after."""
        before = self.aliases()
        done: list[str] = []
        try:
            for alias, version in moves:
                if version is None:
                    if alias in before:
                        self.call(
                            f"deleting @{alias}", partial(self.client.delete_registered_model_alias, self.name, alias)
                        )
                else:
                    move = partial(self.client.set_registered_model_alias, self.name, alias, version)
                    self.call(f"moving @{alias} to version {version}", move)
                done.append(alias)
        except Exception as exc:
            problem = exc.message if isinstance(exc, ToolError) else f"{type(exc).__name__}: {exc}"
            undone = self.undo(before, done)
            raise ToolError(
                f"{self.name}: {problem}; {undone}",
                hint="nothing was promoted; run the operation again once the server answers "
                "(mlgate registry status shows the aliases)",
            ) from None
        return self.aliases()

    def undo(self, before: dict[str, str], done: list[str]) -> str:
        failed = []
        for alias in reversed(done):
            try:
                if alias in before:
                    restore = partial(self.client.set_registered_model_alias, self.name, alias, before[alias])
                    self.call(f"restoring @{alias}", restore)
                else:
                    self.call(
                        f"removing @{alias}", partial(self.client.delete_registered_model_alias, self.name, alias)
                    )
            except ToolError:
                failed.append(alias)
        if failed:
            wanted = ", ".join(f"@{a} -> {before.get(a, '(none)')}" for a in failed)
            return f"UNDO FAILED for {wanted}: set them by hand (mlflow's set_registered_model_alias)"
        moved = ", ".join(f"@{alias}" for alias in done) or "none"
        return f"the alias moves made ({moved}) were undone: the aliases are as they were"


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


def _lock_of(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "id" in value else None


def _not_found(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower()
