"""`mlgate github setup`'s core: the deployment environment and the ruleset of a model repository, planned and applied.

Three pieces, each read first and written only when it differs from what it should be, so a second
run changes nothing:
- the deployment environment (default `production`): required reviewers, and deployments from custom
  branch policies only (PUT /repos/{owner}/{repo}/environments/{name});
- its one branch policy, the repository's default branch (POST .../deployment-branch-policies);
- the ruleset RULESET_NAME on the default branch: changes arrive by pull request, and the PR gates'
  checks must pass (POST /repos/{owner}/{repo}/rulesets, PUT .../rulesets/{id} to update).

Without a token the plan is shown with what would be looked up in its place; with one, the lookups
are made (reads only) and the plan says, piece by piece, whether it would create, update or leave it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from mlgate import redaction
from mlgate.errors import InputError, ToolError
from mlgate.github.api import GitHubApi, HttpError

RULESET_NAME = "mlgate: model gates"
DEFAULT_ENVIRONMENT = "production"
MAX_REVIEWERS = 6  # GitHub's limit of required reviewers per environment

# What a token needs for the writes: GitHub's documented permission for each endpoint.
ADMINISTRATION = (
    'a fine-grained token with the repository permission "Administration: write" '
    "(or a classic token with the `repo` scope)"
)
TEAM_READ = 'the organization permission "Members: read" (or a classic token with the `read:org` scope)'
TOKEN_HINT = (
    "set GITHUB_TOKEN (or GH_TOKEN) to a token of a repository admin: "
    f"{ADMINISTRATION}, plus {TEAM_READ} for team reviewers; "
    "a workflow's own GITHUB_TOKEN cannot be granted Administration"
)

Outcome = Literal["create", "update", "unchanged", "unknown"]
Done = Literal["created", "updated", "unchanged"]
_DONE: dict[str, Done] = {"create": "created", "update": "updated", "unchanged": "unchanged"}


@dataclass(frozen=True)
class Repository:
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def path(self) -> str:
        return f"/repos/{quote(self.owner, safe='')}/{quote(self.name, safe='')}"


@dataclass(frozen=True)
class Reviewer:
    """`--reviewer`: a user login, or `org/team-slug` for a team."""

    kind: Literal["User", "Team"]
    login: str  # the user's login, or the team's `org/slug`

    @property
    def lookup(self) -> str:
        if self.kind == "User":
            return f"/users/{quote(self.login, safe='')}"
        org, slug = self.login.split("/", 1)
        return f"/orgs/{quote(org, safe='')}/teams/{quote(slug, safe='')}"


@dataclass(frozen=True)
class Request:
    """One request of the plan: the method, the path and the JSON body (None for none)."""

    method: str
    path: str
    payload: Any = None
    why: str = ""


@dataclass
class Piece:
    """One thing the command sets up, what it would do (or did) to it, and the write that does it."""

    what: str
    outcome: Outcome
    write: Request | None
    done: Done | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SetupResult:
    repository: Repository
    repository_source: str
    applied: bool
    resolved: bool  # the lookups were made (a token was available)
    default_branch: str
    checks: list[str]
    check_sources: list[str]
    lookups: list[Request]
    pieces: list[Piece]

    @property
    def changes(self) -> int:
        return sum(piece.outcome in ("create", "update", "unknown") for piece in self.pieces)


# -- inputs ------------------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_REPO_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_TEAM_SLUG = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def parse_reviewer(text: str) -> Reviewer:
    value = text.strip().removeprefix("@")
    if "/" in value:
        org, _, slug = value.partition("/")
        if _NAME.match(org) and _TEAM_SLUG.match(slug):
            return Reviewer("Team", f"{org}/{slug}")
    elif _NAME.match(value):
        return Reviewer("User", value)
    raise InputError(
        f"--reviewer {text!r} is neither a GitHub user name nor ORG/TEAM-SLUG",
        hint="pass --reviewer LOGIN for a person or --reviewer ORG/TEAM for a team (its slug, as in its URL)",
    )


def parse_repository(text: str, source: str) -> Repository:
    owner, _, name = text.strip().removesuffix(".git").partition("/")
    if not _NAME.match(owner) or not _REPO_NAME.match(name) or name in (".", ".."):
        raise InputError(
            f"{source}: {text!r} is not OWNER/NAME",
            hint="pass --repo OWNER/NAME, e.g. --repo my-org/fraud-model",
        )
    return Repository(owner, name)


# git@host:owner/name(.git), ssh://git@host[:port]/owner/name(.git), https://[cred@]host/owner/name(.git)
_SCP_REMOTE = re.compile(r"^[A-Za-z0-9._-]+@[^:/]+:(?P<path>[^/].*)$")


def parse_remote_url(url: str) -> Repository | None:
    """OWNER/NAME from a git remote URL (https, ssh or scp-like form); None when it is not `host/owner/name`."""
    redaction.register_uri(url)  # credentials embedded in an https remote are secrets from now on
    url = url.strip()
    match = _SCP_REMOTE.match(url)
    if match:
        path = match["path"]
    else:
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        if parts.scheme not in ("https", "http", "ssh", "git") or not parts.netloc:
            return None
        path = parts.path
    segments = [segment for segment in path.strip("/").removesuffix(".git").split("/") if segment]
    if len(segments) != 2:
        return None
    try:
        return parse_repository("/".join(segments), "remote")
    except InputError:
        return None


def _origin_url(project_root: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(project_root), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def resolve_repository(explicit: str | None, project_root: Path, environ: Mapping[str, str]) -> tuple[Repository, str]:
    """--repo, else GITHUB_REPOSITORY, else the project's `origin` remote; with where it came from."""
    if explicit:
        return parse_repository(explicit, "--repo"), "--repo"
    if environ.get("GITHUB_REPOSITORY"):
        return parse_repository(environ["GITHUB_REPOSITORY"], "GITHUB_REPOSITORY"), "GITHUB_REPOSITORY"
    url = _origin_url(project_root)
    if url:
        repository = parse_remote_url(url)
        if repository is not None:
            return repository, "the git remote origin"
        raise InputError(
            f"the git remote origin of {project_root} is not a GitHub repository URL (host/OWNER/NAME)",
            hint="pass --repo OWNER/NAME",
        )
    raise InputError(
        f"no repository given, and {project_root} has no git remote origin",
        hint="pass --repo OWNER/NAME (or set GITHUB_REPOSITORY)",
    )


# -- desired state -----------------------------------------------------------------------------------


def environment_payload(reviewer_ids: list[tuple[str, int | str]]) -> dict[str, Any]:
    """PUT .../environments/{name}: the reviewers, and deployments from custom branch policies only."""
    return {
        "reviewers": [{"type": kind, "id": reviewer_id} for kind, reviewer_id in reviewer_ids],
        "deployment_branch_policy": {"protected_branches": False, "custom_branch_policies": True},
    }


def ruleset_payload(name: str, checks: list[str], approvals: int) -> dict[str, Any]:
    """The ruleset: on the default branch, active; changes by pull request only, and the gates' checks pass.

    `strict_required_status_checks_policy` is off: on, every merge to main would make each open pull
    request retrain and retest before it could merge.
    """
    return {
        "name": name,
        "target": "branch",
        "enforcement": "active",
        "conditions": {"ref_name": {"include": ["~DEFAULT_BRANCH"], "exclude": []}},
        "rules": [
            {
                "type": "pull_request",
                "parameters": {
                    "required_approving_review_count": approvals,
                    "dismiss_stale_reviews_on_push": True,
                    "require_code_owner_review": False,
                    "require_last_push_approval": False,
                    "required_review_thread_resolution": False,
                },
            },
            {
                "type": "required_status_checks",
                "parameters": {
                    "strict_required_status_checks_policy": False,
                    "required_status_checks": [{"context": check} for check in checks],
                },
            },
        ],
    }


# -- comparing with what is there --------------------------------------------------------------------


def _current_reviewers(environment: dict[str, Any]) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    for rule in environment.get("protection_rules") or []:
        if isinstance(rule, dict) and rule.get("type") == "required_reviewers":
            for entry in rule.get("reviewers") or []:
                reviewer = entry.get("reviewer") if isinstance(entry, dict) else None
                if isinstance(reviewer, dict) and isinstance(reviewer.get("id"), int):
                    found.add((str(entry.get("type")), reviewer["id"]))
    return found


def _environment_matches(environment: dict[str, Any], payload: dict[str, Any]) -> bool:
    wanted = {(entry["type"], entry["id"]) for entry in payload["reviewers"]}
    policy = environment.get("deployment_branch_policy")
    return _current_reviewers(environment) == wanted and policy == payload["deployment_branch_policy"]


def _contains(actual: object, wanted: object) -> bool:
    """`wanted` is in `actual`: equal scalars and lists, and every key of a wanted object (GitHub adds defaults)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(_contains(item, want) for item, want in zip(actual, wanted, strict=True))
        )
    return actual == wanted


def _ruleset_matches(ruleset: dict[str, Any], payload: dict[str, Any]) -> bool:
    for key in ("target", "enforcement", "conditions"):
        if not _contains(ruleset.get(key), payload[key]):
            return False
    rules = {rule.get("type"): rule for rule in ruleset.get("rules") or [] if isinstance(rule, dict)}
    if set(rules) != {rule["type"] for rule in payload["rules"]}:
        return False
    for rule in payload["rules"]:
        actual = dict(rules[rule["type"]].get("parameters") or {})
        wanted = dict(rule["parameters"])
        if rule["type"] == "required_status_checks":
            # The order of the checks means nothing to GitHub.
            have = {check.get("context") for check in actual.pop("required_status_checks", []) or []}
            if have != {check["context"] for check in wanted.pop("required_status_checks")}:
                return False
        if not _contains(actual, wanted):
            return False
    return True


# -- errors ------------------------------------------------------------------------------------------


def _read_failed(exc: HttpError, what: str) -> InputError | ToolError:
    if exc.status >= 500:
        return ToolError(f"GitHub failed {exc.method} {exc.path} ({what}): {exc.detail()}", hint="try again in a while")
    if exc.rate_limited:
        return ToolError(
            f"GitHub's rate limit was reached at {exc.method} {exc.path}", hint="try again after the limit resets"
        )
    if exc.status == 401:
        return InputError(f"GitHub rejected the token ({exc.method} {exc.path}: {exc.detail()})", hint=TOKEN_HINT)
    return InputError(f"{what}: {exc.method} {exc.path} answered {exc.detail()}", hint=TOKEN_HINT)


def _write_failed(exc: HttpError, endpoint: str) -> InputError | ToolError:
    if exc.status in (401, 403, 404) and not exc.rate_limited:
        said = "the token is not valid" if exc.status == 401 else "the token may not change it"
        return InputError(
            f"GitHub refused {exc.method} {exc.path} ({endpoint}): {exc.detail()}; {said}. "
            f"It needs {ADMINISTRATION}, from a repository admin",
            hint=TOKEN_HINT,
        )
    if exc.status == 422:
        return InputError(
            f"GitHub did not accept {exc.method} {exc.path} ({endpoint}): {exc.detail()}",
            hint="required reviewers on a private repository need GitHub Pro, Team or Enterprise; "
            "reviewers need read access to the repository",
        )
    return _read_failed(exc, endpoint)


# -- plan and apply ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupRequest:
    repository: Repository
    repository_source: str
    environment: str
    reviewers: list[Reviewer]
    checks: list[str]
    check_sources: list[str]
    approvals: int = 0
    ruleset_name: str = RULESET_NAME


def _validate(request: SetupRequest) -> None:
    if not request.reviewers:
        raise InputError(
            "no required reviewer given: the environment would let a deployment through unapproved",
            hint="pass --reviewer LOGIN (a person) or --reviewer ORG/TEAM (a team), once per reviewer",
        )
    if len(request.reviewers) > MAX_REVIEWERS:
        raise InputError(
            f"{len(request.reviewers)} reviewers given; GitHub allows at most {MAX_REVIEWERS} per environment",
            hint="name a team (--reviewer ORG/TEAM) instead of its members",
        )
    if not (0 <= request.approvals <= 10):
        raise InputError(f"--approvals {request.approvals}: GitHub allows 0 to 10", hint="pass --approvals 0 to 10")
    if not request.environment.strip() or len(request.environment) > 255:
        raise InputError(
            f"--environment {request.environment!r} is not an environment name", hint="e.g. --environment production"
        )


@dataclass(frozen=True)
class _Paths:
    """The API paths of the three pieces of one setup request."""

    environment: str
    policies: str
    rulesets: str

    @classmethod
    def of(cls, request: SetupRequest) -> _Paths:
        environment = f"{request.repository.path}/environments/{quote(request.environment, safe='')}"
        return cls(environment, f"{environment}/deployment-branch-policies", f"{request.repository.path}/rulesets")


def plan(request: SetupRequest, api: GitHubApi | None) -> SetupResult:
    """What setup would do: with `api`, after reading what is there (reads only); without, from placeholders."""
    _validate(request)
    paths = _Paths.of(request)
    lookups = _lookups(request, paths)
    ruleset = ruleset_payload(request.ruleset_name, request.checks, request.approvals)
    if api is None:
        return _placeholder_plan(request, paths, lookups, ruleset)
    branch = _default_branch(api, request.repository)
    environment = environment_payload(_reviewer_ids(api, request))
    env_piece, current_env = _environment_piece(api, request, paths, environment)
    policy_piece = _policy_piece(api, paths, current_env, branch)
    rules_piece = _ruleset_piece(api, request, paths, ruleset)
    return _result(request, branch, lookups, [env_piece, policy_piece, rules_piece], resolved=True)


def _result(
    request: SetupRequest, branch: str, lookups: list[Request], pieces: list[Piece], *, resolved: bool
) -> SetupResult:
    return SetupResult(
        repository=request.repository,
        repository_source=request.repository_source,
        applied=False,
        resolved=resolved,
        default_branch=branch,
        checks=request.checks,
        check_sources=request.check_sources,
        lookups=lookups,
        pieces=pieces,
    )


def _lookups(request: SetupRequest, paths: _Paths) -> list[Request]:
    """The reads the plan makes (shown in place of their answers when there is no token)."""
    lookups = [Request("GET", request.repository.path, why="the default branch")]
    lookups += [
        Request("GET", reviewer.lookup, why=f"the id of reviewer {reviewer.login}") for reviewer in request.reviewers
    ]
    lookups += [
        Request("GET", paths.environment, why="the environment as it is, if it exists"),
        Request("GET", f"{paths.policies}?per_page=100&page=1", why="its branch policies"),
        Request(
            "GET",
            f"{paths.rulesets}?includes_parents=false&per_page=100&page=1",
            why=f"a ruleset named {request.ruleset_name!r}",
        ),
    ]
    return lookups


def _placeholder_plan(
    request: SetupRequest, paths: _Paths, lookups: list[Request], ruleset: dict[str, Any]
) -> SetupResult:
    """The plan without a token: each piece's write, with what the lookups would give in its place."""
    branch = "<default branch>"
    environment = environment_payload([(r.kind, f"<id of {r.login}>") for r in request.reviewers])
    pieces = [
        Piece(f"environment {request.environment}", "unknown", Request("PUT", paths.environment, environment)),
        Piece(
            f"deployment branch policy {branch}",
            "unknown",
            Request("POST", paths.policies, {"name": branch, "type": "branch"}),
        ),
        Piece(
            f"ruleset {request.ruleset_name!r}",
            "unknown",
            Request("POST", paths.rulesets, ruleset, why="or PUT .../rulesets/{id} when it exists"),
        ),
    ]
    return _result(request, branch, lookups, pieces, resolved=False)


def _default_branch(api: GitHubApi, repo: Repository) -> str:
    try:
        found = api.get(repo.path)
    except HttpError as exc:
        if exc.status == 404:
            raise InputError(
                f"repository {repo.full_name} not found, or the token cannot see it (GET {repo.path}: {exc.detail()})",
                hint=f"check --repo (or GITHUB_REPOSITORY, the origin remote); {TOKEN_HINT}",
            ) from None
        raise _read_failed(exc, "the repository") from None
    branch = str(found.get("default_branch") or "") if isinstance(found, dict) else ""
    if not branch:
        raise ToolError(f"GET {repo.path} did not say the repository's default branch", hint="check GITHUB_API_URL")
    return branch


def _reviewer_ids(api: GitHubApi, request: SetupRequest) -> list[tuple[str, int | str]]:
    """(kind, id) of each required reviewer, looked up by login or org/team slug."""
    ids: list[tuple[str, int | str]] = []
    for reviewer in request.reviewers:
        try:
            body = api.get(reviewer.lookup)
        except HttpError as exc:
            if exc.status == 404:
                what = (
                    "GitHub user" if reviewer.kind == "User" else f"team in organization {reviewer.login.split('/')[0]}"
                )
                hint = (
                    "check the login (--reviewer LOGIN)"
                    if reviewer.kind == "User"
                    else f"check the org and the team's slug (as in its URL); reading teams needs {TEAM_READ}"
                )
                raise InputError(f"reviewer {reviewer.login}: no such {what} ({exc.detail()})", hint=hint) from None
            raise _read_failed(exc, f"reviewer {reviewer.login}") from None
        if not isinstance(body, dict) or not isinstance(body.get("id"), int):
            raise ToolError(f"GET {reviewer.lookup} did not give an id", hint="check GITHUB_API_URL")
        ids.append((reviewer.kind, body["id"]))
    return ids


def _environment_piece(
    api: GitHubApi, request: SetupRequest, paths: _Paths, environment: dict[str, Any]
) -> tuple[Piece, dict[str, Any] | None]:
    """The environment's piece, and the environment as it is (None when it does not exist yet)."""
    try:
        current_env: dict[str, Any] | None = api.get(paths.environment)
    except HttpError as exc:
        if exc.status != 404:
            raise _read_failed(exc, f"environment {request.environment}") from None
        current_env = None
    what = f"environment {request.environment}"
    if current_env is None:
        return Piece(what, "create", Request("PUT", paths.environment, environment)), current_env
    if _environment_matches(current_env, environment):
        return Piece(what, "unchanged", None), current_env
    return Piece(what, "update", Request("PUT", paths.environment, environment)), current_env


def _policy_piece(api: GitHubApi, paths: _Paths, current_env: dict[str, Any] | None, branch: str) -> Piece:
    """The default branch's deployment policy, and a note naming the other policies mlgate leaves as they are."""
    policies: list[Any] = []
    custom = isinstance(current_env, dict) and (current_env.get("deployment_branch_policy") or {}).get(
        "custom_branch_policies"
    )
    if custom:
        try:
            policies = api.get_pages(paths.policies, key="branch_policies")
        except HttpError as exc:
            if exc.status != 404:
                raise _read_failed(exc, "the environment's branch policies") from None
    wanted_policy = {"name": branch, "type": "branch"}
    have = any(
        isinstance(policy, dict) and policy.get("name") == branch and policy.get("type", "branch") == "branch"
        for policy in policies
    )
    policy_piece = Piece(
        f"deployment branch policy {branch}",
        "unchanged" if have else "create",
        None if have else Request("POST", paths.policies, wanted_policy),
    )
    others = sorted(
        f"{policy.get('name')} ({policy.get('type', 'branch')})"
        for policy in policies
        if isinstance(policy, dict) and not (policy.get("name") == branch and policy.get("type", "branch") == "branch")
    )
    if others:
        policy_piece.notes.append(
            f"the environment also lets these deploy, which mlgate leaves as they are: {', '.join(others)}; "
            "remove them in the environment's settings for default-branch-only deployments"
        )
    return policy_piece


def _ruleset_piece(api: GitHubApi, request: SetupRequest, paths: _Paths, ruleset: dict[str, Any]) -> Piece:
    """The ruleset's piece: created, updated in place (PUT .../rulesets/{id}) or left as it is."""
    try:
        listed = api.get_pages(f"{paths.rulesets}?includes_parents=false")
    except HttpError as exc:
        raise _read_failed(exc, "the repository's rulesets") from None
    existing = [
        item
        for item in listed
        if isinstance(item, dict)
        and item.get("name") == request.ruleset_name
        and item.get("source_type", "Repository") == "Repository"
    ]
    what = f"ruleset {request.ruleset_name!r}"
    if not existing:
        return Piece(what, "create", Request("POST", paths.rulesets, ruleset))
    one_path = f"{paths.rulesets}/{int(existing[0]['id'])}"
    try:
        current = api.get(one_path)
    except HttpError as exc:
        raise _read_failed(exc, what) from None
    if isinstance(current, dict) and _ruleset_matches(current, ruleset):
        return Piece(what, "unchanged", None)
    return Piece(what, "update", Request("PUT", one_path, ruleset))


_ENDPOINTS = {
    "PUT environments": "create or update an environment",
    "POST deployment-branch-policies": "create a deployment branch policy",
    "POST rulesets": "create a repository ruleset",
    "PUT rulesets": "update a repository ruleset",
}


def _endpoint(write: Request) -> str:
    parts = write.path.split("?")[0].rstrip("/").split("/")
    tail = parts[-1] if write.method == "POST" else parts[-2]
    return _ENDPOINTS.get(f"{write.method} {tail}", f"{write.method} {write.path}")


def apply(request: SetupRequest, api: GitHubApi) -> SetupResult:
    """Plan with the lookups made, then make each write the plan holds, in order; a second run writes nothing."""
    result = plan(request, api)
    for piece in result.pieces:
        if piece.write is None:
            piece.done = "unchanged"
            continue
        try:
            api.request(piece.write.method, piece.write.path, piece.write.payload)
        except HttpError as exc:
            if exc.status == 303 and piece.write.path.endswith("/deployment-branch-policies"):
                piece.done = "unchanged"  # GitHub's answer to a policy it has already: another run got there first
                continue
            raise _write_failed(exc, _endpoint(piece.write)) from None
        piece.done = _DONE[piece.outcome]
    result.applied = True
    return result


__all__ = [
    "ADMINISTRATION",
    "DEFAULT_ENVIRONMENT",
    "RULESET_NAME",
    "Piece",
    "Repository",
    "Request",
    "Reviewer",
    "SetupRequest",
    "SetupResult",
    "apply",
    "environment_payload",
    "parse_remote_url",
    "parse_repository",
    "parse_reviewer",
    "plan",
    "resolve_repository",
    "ruleset_payload",
]
