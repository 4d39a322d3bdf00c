"""The registry's audit trail: who did what to which model version, when, on which evidence, and why.

Every registry operation writes one record, twice: as tags on the model version it concerns
(`mlgate.audit.<operation>.*`, the latest of each kind) and as one run in the append-only audit
experiment (`registry.audit_experiment`), whose tags hold the whole record; `mlgate registry
history` reads those runs back in order. Who: the GitHub actor, and for a deployment the reviewers
who approved it, read from GitHub's REST API (the run's approvals).
"""

from __future__ import annotations

import getpass
import json
import os
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlgate import redaction

if TYPE_CHECKING:
    from mlflow import MlflowClient

TAG = "mlgate.audit"
TAG_VALUE_LIMIT = 7900  # MLflow's run tag values hold 8,000 characters


@dataclass
class Who:
    """The person and the workflow behind an operation (from the GitHub Actions environment, else the OS user)."""

    actor: str
    approvers: list[str] = field(default_factory=list)
    run_url: str = ""
    commit: str = ""
    repository: str = ""
    environment: str = ""

    @classmethod
    def from_env(cls, environment: str = "") -> Who:
        env = os.environ
        actor = env.get("GITHUB_ACTOR") or _os_user()
        server, repo, run_id = (
            env.get("GITHUB_SERVER_URL", ""),
            env.get("GITHUB_REPOSITORY", ""),
            env.get("GITHUB_RUN_ID"),
        )
        run_url = f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else ""
        who = cls(actor, [], run_url, env.get("GITHUB_SHA", ""), repo, environment)
        if environment:
            who.approvers = approvers_of_run(environment)
        return who


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "unknown"


def approvers_of_run(environment: str) -> list[str]:
    """Reviewers who approved this workflow run's deployment to `environment` (GET .../runs/{id}/approvals).

    Empty outside Actions or without a token (the workflow passes GITHUB_TOKEN for it); a failure of the
    API is recorded as such, never guessed.
    """
    env = os.environ
    token, repo, run_id = env.get("GITHUB_TOKEN"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if not (token and repo and run_id):
        return []
    api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    request = urllib.request.Request(  # noqa: S310 - the API URL comes from the runner
        f"{api}/repos/{repo}/actions/runs/{run_id}/approvals",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            approvals = json.loads(response.read() or b"[]")
    except (OSError, ValueError) as exc:
        return [f"(approvals unreadable: {redaction.redact(str(exc))[:120]})"]
    names: list[str] = []
    for approval in approvals if isinstance(approvals, list) else []:
        environments = [str(e.get("name", "")) for e in approval.get("environments", []) if isinstance(e, dict)]
        if approval.get("state") == "approved" and (not environments or environment in environments):
            login = str((approval.get("user") or {}).get("login", ""))
            if login and login not in names:
                names.append(login)
    return names


@dataclass(kw_only=True)
class AuditRecord:
    operation: str  # register | promote | rollback
    model: str
    version: str
    decision: str  # registered | promoted | unchanged | rejected | rolled-back | failed
    reason: str
    who: Who
    aliases_before: dict[str, str] = field(default_factory=dict)
    aliases_after: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)  # metrics compared, reports, lineage
    at: float = field(default_factory=time.time)
    run_id: str = ""
    intent: str = ""  # the id of the alias move it records (mlgate.registry.intent), to find it after a fault

    def tags(self) -> dict[str, str]:
        """The record as run tags of the audit experiment (each value within MLflow's limit)."""
        raw = {
            "operation": self.operation,
            "model": self.model,
            "version": self.version,
            "decision": self.decision,
            "reason": self.reason,
            "actor": self.who.actor,
            "approvers": ",".join(self.who.approvers),
            "run_url": self.who.run_url,
            "commit": self.who.commit,
            "repository": self.who.repository,
            "environment": self.who.environment,
            "aliases_before": json.dumps(self.aliases_before, sort_keys=True),
            "aliases_after": json.dumps(self.aliases_after, sort_keys=True),
            "evidence": json.dumps(self.evidence, sort_keys=True, default=str),
            "at": f"{self.at:.3f}",
            "intent": self.intent,
        }
        return {f"{TAG}.{key}": redaction.redact(value)[:TAG_VALUE_LIMIT] for key, value in raw.items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str], run_id: str) -> AuditRecord:
        def get(key: str) -> str:
            return tags.get(f"{TAG}.{key}", "")

        def loads(key: str) -> Any:
            try:
                return json.loads(get(key) or "{}")
            except ValueError:
                return {"unreadable": get(key)[:200]}

        who = Who(
            get("actor"),
            [a for a in get("approvers").split(",") if a],
            get("run_url"),
            get("commit"),
            get("repository"),
            get("environment"),
        )
        return cls(
            operation=get("operation"),
            model=get("model"),
            version=get("version"),
            decision=get("decision"),
            reason=get("reason"),
            who=who,
            aliases_before=loads("aliases_before"),
            aliases_after=loads("aliases_after"),
            evidence=loads("evidence"),
            at=_seconds(get("at")),
            run_id=run_id,
            intent=get("intent"),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _seconds(raw: str) -> float:
    """A record's time; one that is not a number reads as unknown (0: history prints "?") rather than
    hiding the rest of the trail."""
    try:
        at = float(raw or 0)
    except ValueError:
        return 0.0
    return at if at == at and abs(at) != float("inf") else 0.0


def write(client: MlflowClient, experiment: str, record: AuditRecord) -> str:
    """Append `record` to the audit experiment (created on first use); returns the record's run id."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    run = client.create_run(
        experiment_id,
        tags=record.tags(),
        run_name=f"{record.operation} {record.model} v{record.version or '-'}: {record.decision}",
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    record.run_id = str(run.info.run_id)
    return record.run_id


def recorded(client: MlflowClient, experiment: str, intent: str) -> str | None:
    """The run id of the record of the alias move `intent`, when one was written."""
    found = client.get_experiment_by_name(experiment)
    if found is None or not intent:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{TAG}.intent` = '{intent}'", max_results=1)
    return str(runs[0].info.run_id) if runs else None


def history(client: MlflowClient, experiment: str, model: str, max_records: int = 100_000) -> list[AuditRecord]:
    """Every record of `model`, oldest first (paged through the server)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    records: list[AuditRecord] = []
    token: str | None = None
    while len(records) < max_records:
        page = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{TAG}.model` = '{model}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
            page_token=token,
        )
        records += [AuditRecord.from_tags(dict(run.data.tags), str(run.info.run_id)) for run in page]
        token = page.token
        if not token:
            break
    records.sort(key=lambda r: r.at)
    return records
