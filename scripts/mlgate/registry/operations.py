"""register, promote, rollback, status and history: the registry gate's operations on one registered model."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlgate.config import LoadedConfig
from mlgate.errors import InputError
from mlgate.registry import (
    CHALLENGER,
    LINEAGE_PREFIXES,
    METRIC_TAG,
    PREVIOUS,
    Decision,
    Registry,
    promotion_metric,
)
from mlgate.registry.audit import AuditRecord, Who
from mlgate.registry.audit import history as read_history


@dataclass
class Evidence:
    """What a release brings to register: the model-test and compress reports of its jobs (action outputs)."""

    model_tests: dict[str, Any] | None = (
        None  # {"passed", "promotable", "metrics": {candidate, champion}, "champion_version"}
    )
    compress: dict[str, Any] | None = None  # {"variant", "source", "report": {...}}

    @classmethod
    def parse(cls, raw: str | None) -> Evidence:
        """The `evidence` output of test-model or compress (JSON), or an empty one."""
        if not raw or not raw.strip():
            return cls()
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise InputError(
                f"--evidence is not JSON: {exc}",
                hint="pass the `evidence` output of the test-model or compress job as it is",
            ) from None
        if not isinstance(value, dict):
            raise InputError("--evidence must be a JSON object", hint="pass the `evidence` output as it is")
        tests, compress = value.get("model_tests"), value.get("compress")
        if isinstance(tests, dict):
            _require_numbers(tests.get("metrics"), "--evidence's model_tests.metrics")
        return cls(tests if isinstance(tests, dict) else None, compress if isinstance(compress, dict) else None)


def _require_numbers(metrics: Any, where: str, hint: str = "pass the `evidence` output as the job wrote it") -> None:
    """Each recorded metric (candidate and champion) a number, or one InputError naming it."""
    if metrics is None:
        return
    if not isinstance(metrics, dict):
        raise InputError(f"{where} must be an object of candidate and champion metrics", hint=hint)
    for side, values in metrics.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise InputError(f"{where}.{side} must be an object of metric: number", hint=hint)
        for name, number in values.items():
            if isinstance(number, bool) or not isinstance(number, int | float):  # NaN: a metric the rows left undefined
                raise InputError(f"{where}.{side}.{name} is {str(number)[:40]!r}, not a number", hint=hint)


def register(registry: Registry, model_uri: str, evidence: Evidence, who: Who) -> Decision:
    """A new version of the registered model from `model_uri` (models:/<model_id>), aliased @challenger,
    with the run's lineage and the release's reports on its tags."""
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith("models:/m-"):
        raise InputError(
            f"cannot register {model_uri!r}: expected the logged model's URI, models:/<model_id>",
            hint="pass the compress job's model-uri (or the train job's when there is no compression)",
        )
    model_id = model_uri.removeprefix("models:/").split("/", 1)[0]

    def logged() -> Any:
        try:
            return registry.client.get_logged_model(model_id)
        except MlflowException as exc:
            if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")):
                return None
            raise

    model = registry.call("reading the logged model", logged)
    if model is None:
        raise InputError(
            f"no logged model {model_id} on the tracking server", hint="pass the model-uri of this release"
        )
    tags = dict(model.tags or {})
    lineage_run = model.source_run_id
    source_uri = tags.get("mlgate.compress.source")  # a compressed variant: lineage is its original's run
    if source_uri and source_uri.startswith("models:/m-"):
        source = registry.call(
            "reading the original model", lambda: registry.client.get_logged_model(source_uri.removeprefix("models:/"))
        )
        lineage_run = source.source_run_id
    version_tags: dict[str, str] = {"mlgate.model_uri": model_uri}
    if source_uri:
        version_tags["mlgate.compress.source"] = source_uri
        version_tags["mlgate.compress.variant"] = tags.get("mlgate.compress.variant", "")
    if lineage_run:
        run = registry.call("reading the training run", lambda: registry.client.get_run(lineage_run))
        version_tags["mlgate.train.run_id"] = str(lineage_run)
        for key, value in dict(run.data.tags).items():
            if key.startswith(LINEAGE_PREFIXES):
                version_tags[key] = value
        version_tags["mlgate.train.metrics"] = json.dumps(dict(run.data.metrics), sort_keys=True)
    if evidence.model_tests is not None:
        version_tags["mlgate.model_tests.passed"] = str(bool(evidence.model_tests.get("passed"))).lower()
        version_tags["mlgate.model_tests.promotable"] = str(bool(evidence.model_tests.get("promotable"))).lower()
        version_tags[METRIC_TAG] = json.dumps(evidence.model_tests.get("metrics") or {}, sort_keys=True)
        version_tags["mlgate.model_tests.champion_version"] = str(evidence.model_tests.get("champion_version") or "")
    if evidence.compress is not None:
        version_tags["mlgate.compress.report"] = json.dumps(evidence.compress.get("report") or {}, sort_keys=True)
    with_model = registry.call("reading the registered model", registry.exists)
    if not with_model:
        registry.call("creating the registered model", lambda: registry.client.create_registered_model(registry.name))
    with registry.locked("register", who):
        before = registry.aliases()  # under the lock: the move's intent is computed from them
        created = registry.call(
            "creating the version",
            lambda: registry.client.create_model_version(
                registry.name,
                model_uri,
                run_id=lineage_run,
                tags={k: v[:4900] for k, v in version_tags.items()},
                model_id=model_id,
            ),
        )
        version = str(created.version)
        champion = before.get(registry.champion)
        decision = Decision(
            operation="register",
            model=registry.name,
            version=version,
            decision="registered",
            reason=f"version {version} of {registry.name} from {model_uri} is @challenger"
            + (f" (the champion is version {champion})" if champion else " (no champion yet)"),
            aliases_before=before,
            evidence={"model_uri": model_uri, "tags": version_tags},
        )
        decision.aliases_after = registry.move([(CHALLENGER, version)], decision, who)
        return registry.record(decision, who)


def _metrics_of(version: Any) -> dict[str, Any]:
    try:
        value = json.loads(dict(version.tags or {}).get(METRIC_TAG, "{}"))
    except ValueError:
        value = "not JSON"
    _require_numbers(
        value,
        f"version {version.version}'s tag {METRIC_TAG}",
        hint="register the model again with its job's evidence, or fix the tag in MLflow (set_model_version_tag)",
    )
    return value if isinstance(value, dict) else {}


def judge(loaded: LoadedConfig, challenger: Any, champion_version: str | None) -> tuple[bool, str, dict[str, Any]]:
    """(promote?, why, the metrics compared) by registry.promotion, on the evidence recorded at register."""
    rule = loaded.model.registry.promotion
    tags = dict(challenger.tags or {})
    metric, margin = promotion_metric(loaded)
    recorded = _metrics_of(challenger)
    candidate = dict(recorded.get("candidate") or {})
    champion = dict(recorded.get("champion") or {})
    evidence = {
        "metric": metric,
        "margin": margin,
        "guards": dict(rule.guards),
        "candidate": candidate,
        "champion": champion,
        "champion_version": champion_version,
    }
    if rule.require_model_tests and tags.get("mlgate.model_tests.passed") != "true":
        state = tags.get("mlgate.model_tests.passed")
        why = "its model tests failed" if state == "false" else "no model-test result was recorded at register"
        return False, f"version {challenger.version} is not promotable: {why}", evidence
    if champion_version is None:
        return True, f"version {challenger.version} becomes the first champion (no champion yet)", evidence
    if not champion:
        return (
            False,
            (
                f"version {challenger.version} was tested without a champion, and version {champion_version} is "
                "champion now: there is no comparison on the same rows"
            ),
            evidence,
        )
    ours, theirs = candidate.get(metric), champion.get(metric)
    if ours is None or theirs is None:
        return False, f"{metric} is missing from the recorded model-test metrics", evidence
    if float(ours) < float(theirs) + margin:
        return (
            False,
            (
                f"{metric} {float(ours):.4f} does not beat the champion's {float(theirs):.4f} by the margin "
                f"{margin:g} (registry.promotion)"
            ),
            evidence,
        )
    for guard, tolerance in rule.guards.items():
        mine, prod = candidate.get(guard), champion.get(guard)
        if mine is not None and prod is not None and float(mine) < float(prod) - tolerance:
            return (
                False,
                (
                    f"guard {guard} {float(mine):.4f} is worse than the champion's {float(prod):.4f} by more than "
                    f"{tolerance:g}"
                ),
                evidence,
            )
    return (
        True,
        (
            f"{metric} {float(ours):.4f} beats the champion's {float(theirs):.4f} by "
            f"{float(ours) - float(theirs):+.4f} (margin {margin:g})"
        ),
        evidence,
    )


def promote(loaded: LoadedConfig, registry: Registry, who: Who, version: str | None = None) -> Decision:
    """@champion -> the challenger (or `version`), @previous -> the old champion, when the rule allows it.
    Idempotent: a promotion that already happened changes nothing and says so."""
    registry.require()
    with registry.locked("promote", who):
        before = registry.aliases()
        target = version or before.get(CHALLENGER)
        if target is None:
            raise InputError(
                f"{registry.name} has no @challenger to promote",
                hint="register a release first (mlgate registry register), or name the version: --version N",
            )
        challenger = registry.version(target)
        champion = before.get(registry.champion)
        if champion == str(target):
            decision = Decision(
                operation="promote",
                model=registry.name,
                version=str(target),
                decision="unchanged",
                reason=f"version {target} is already @champion: nothing to do",
                aliases_before=before,
                aliases_after=before,
            )
            return registry.record(decision, who)
        recorded_champion = dict(challenger.tags or {}).get("mlgate.model_tests.champion_version")
        ok, why, evidence = judge(loaded, challenger, champion)
        if ok and recorded_champion and champion and recorded_champion != champion:
            ok, why = (
                False,
                (
                    f"the model tests compared version {target} with champion version {recorded_champion}, but version "
                    f"{champion} is champion now: the evidence is stale"
                ),
            )
        decision = Decision(
            operation="promote",
            model=registry.name,
            version=str(target),
            decision="promoted" if ok else "rejected",
            reason=why,
            aliases_before=before,
            aliases_after=before,
            evidence=evidence,
        )
        if not ok:
            # Refused: nothing moves; the reason is recorded, and the caller fails the step (mlgate registry).
            return registry.record(decision, who)
        moves: list[tuple[str, str | None]] = [(PREVIOUS, champion)] if champion else []
        # The intent, the moves and the audit record all under the lock: a fault between any two of them leaves
        # the intent, which the next operation finishes (Registry.recover).
        decision.aliases_after = registry.move([*moves, (registry.champion, str(target))], decision, who)
        return registry.record(decision, who)


def rollback(registry: Registry, who: Who, reason: str, version: str | None = None) -> Decision:
    """@champion -> @previous (or `version`); the version rolled back from is recorded with `reason`."""
    registry.require()
    if not reason.strip():
        raise InputError("a rollback needs a reason", hint="pass --reason 'why production goes back'")
    with registry.locked("rollback", who):
        before = registry.aliases()
        target = version or before.get(PREVIOUS)
        if target is None:
            raise InputError(
                f"{registry.name} has no @previous version to roll back to",
                hint="name the version to serve: --version N (mlgate registry history lists them)",
            )
        registry.version(target)
        current = before.get(registry.champion)
        if current == str(target):
            decision = Decision(
                operation="rollback",
                model=registry.name,
                version=str(target),
                decision="unchanged",
                reason=f"version {target} is already @champion: nothing to do ({reason})",
                aliases_before=before,
                aliases_after=before,
            )
            return registry.record(decision, who)
        moves: list[tuple[str, str | None]] = [(registry.champion, str(target))]
        if before.get(PREVIOUS) == str(target):
            moves.append((PREVIOUS, None))  # consumed: a second rollback must name its version
        decision = Decision(
            operation="rollback",
            model=registry.name,
            version=str(target),
            decision="rolled-back",
            reason=f"@champion back to version {target} from version {current or '(none)'}: {reason}",
            aliases_before=before,
            evidence={"from_version": current},
        )
        decision.aliases_after = registry.move(moves, decision, who)
        return registry.record(decision, who)


def status(registry: Registry, who: Who | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The aliases and what each points at (version, model URI, variant, when and by whom it got there), after
    finishing an operation that a fault interrupted (Registry.heal), each line of what was done given to `say`."""
    registry.require()
    for line in registry.heal(who or Who.from_env(), "status"):
        say(f"mlgate registry status: {line}")
    aliases = registry.aliases()
    out: dict[str, Any] = {}
    for alias, version in sorted(aliases.items()):
        found = registry.version(version)
        tags = dict(found.tags or {})
        promoted = tags.get("mlgate.audit.promote.decision") == "promoted"
        out[alias] = {
            "version": version,
            "model_uri": tags.get("mlgate.model_uri", str(found.source)),
            "variant": tags.get("mlgate.compress.variant", ""),
            "commit": tags.get("mlgate.git.commit", ""),
            "promoted_by": tags.get("mlgate.audit.promote.by", "") if promoted else "",
            "promoted_at": tags.get("mlgate.audit.promote.at", "") if promoted else "",
        }
    return out


def history(registry: Registry) -> list[AuditRecord]:
    return list(
        registry.call(
            "reading the audit log", lambda: read_history(registry.client, registry.audit_experiment, registry.name)
        )
    )
