"""The repository-settings endpoints of the GitHub API stand-in: repositories, users, teams, environments,
deployment branch policies and rulesets, each request checked against the shape GitHub documents.

Shapes (docs.github.com/rest, API version 2022-11-28):
- PUT /repos/{o}/{r}/environments/{name}: every key optional; `wait_timer` 0..43200, `prevent_self_review`
  bool, `reviewers` null or at most 6 `{type: User|Team, id: int}`, `deployment_branch_policy` null or
  `{protected_branches: bool, custom_branch_policies: bool}` (both required, exactly one true); 200
  with the environment, its reviewers under `protection_rules`.
- GET/POST .../environments/{name}/deployment-branch-policies: `{name (required), type: branch|tag}`; 200
  with the policy, 303 when the same name and type exist, 404 when the environment does not allow
  custom branch policies. The list answers `{total_count, branch_policies}`.
- POST /repos/{o}/{r}/rulesets: `name` and `enforcement` (disabled|active|evaluate) required, `target`
  branch|tag|push, `bypass_actors`, `conditions.ref_name.{include,exclude}`, `rules` (each `{type,
  parameters}`, parameters checked for `pull_request` and `required_status_checks`); 201. PUT
  .../rulesets/{id}: the same keys, all optional; 200. Names are unique per repository (422).
  The list answers summaries (no rules, no conditions); GET of one answers it whole, with GitHub's defaults.
Unknown top-level keys of an environment or a ruleset are refused with 422, as GitHub does.

A token without the Administration permission (`administration = False`) can read but is answered
403 "Resource not accessible by integration" on every write, as GitHub answers such a token.
"""

from __future__ import annotations

import copy
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

Reply = tuple[HTTPStatus, object, dict[str, str]]

NOT_ACCESSIBLE = "Resource not accessible by integration"
_DOCS = "https://docs.github.com/rest"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid(*errors: str) -> Reply:
    return (
        HTTPStatus.UNPROCESSABLE_ENTITY,
        {"message": "Invalid request.", "errors": list(errors), "documentation_url": _DOCS},
        {},
    )


def _not_found() -> Reply:
    return HTTPStatus.NOT_FOUND, {"message": "Not Found", "documentation_url": _DOCS, "status": "404"}, {}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown_keys(body: dict[str, Any], allowed: set[str]) -> list[str]:
    return [f'"{key}" is not a permitted key.' for key in body if key not in allowed]


def _page(items: list[Any], query: dict[str, list[str]]) -> list[Any]:
    """One page of a list, as GitHub pages it: `per_page` (default 30, at most 100) and `page` (from 1)."""

    def number(name: str, default: int) -> int:
        try:
            return int(query[name][0])
        except (KeyError, IndexError, ValueError):
            return default

    per_page = min(max(number("per_page", 30), 1), 100)
    start = (max(number("page", 1), 1) - 1) * per_page
    return items[start : start + per_page]


# -- request shapes ----------------------------------------------------------------------------------

_ENVIRONMENT_KEYS = {"wait_timer", "prevent_self_review", "reviewers", "deployment_branch_policy"}
_RULESET_KEYS = {"name", "target", "enforcement", "bypass_actors", "conditions", "rules"}
_PULL_REQUEST_REQUIRED = {
    "dismiss_stale_reviews_on_push": bool,
    "require_code_owner_review": bool,
    "require_last_push_approval": bool,
    "required_approving_review_count": int,
    "required_review_thread_resolution": bool,
}
_PULL_REQUEST_OPTIONAL = {"allowed_merge_methods", "automatic_copilot_code_review_enabled", "required_reviewers"}
# Rule types without parameters; others with parameters GitHub knows are refused here as unknown to the stand-in.
_PLAIN_RULES = {"creation", "update", "deletion", "required_linear_history", "required_signatures", "non_fast_forward"}


def environment_problems(body: object) -> list[str]:
    if body is None:
        return []  # GitHub creates an environment from an empty body
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    problems = _unknown_keys(body, _ENVIRONMENT_KEYS)
    if "wait_timer" in body and not (_is_int(body["wait_timer"]) and 0 <= body["wait_timer"] <= 43200):
        problems.append("wait_timer must be an integer from 0 to 43200")
    if "prevent_self_review" in body and not isinstance(body["prevent_self_review"], bool):
        problems.append("prevent_self_review must be a boolean")
    reviewers = body.get("reviewers")
    if reviewers is not None:
        if not isinstance(reviewers, list):
            problems.append("reviewers must be an array or null")
        else:
            if len(reviewers) > 6:
                problems.append("reviewers: at most 6")
            for index, reviewer in enumerate(reviewers):
                if not isinstance(reviewer, dict) or set(reviewer) - {"type", "id"}:
                    problems.append(f"reviewers[{index}] must be an object of type and id")
                elif reviewer.get("type") not in ("User", "Team"):
                    problems.append(f"reviewers[{index}].type must be User or Team")
                elif not _is_int(reviewer.get("id")):
                    problems.append(f"reviewers[{index}].id must be an integer")
    policy = body.get("deployment_branch_policy")
    if policy is not None:
        if not isinstance(policy, dict) or set(policy) != {"protected_branches", "custom_branch_policies"}:
            problems.append(
                "deployment_branch_policy needs protected_branches and custom_branch_policies, and nothing else"
            )
        elif not all(isinstance(value, bool) for value in policy.values()):
            problems.append("deployment_branch_policy's values must be booleans")
        elif policy["protected_branches"] == policy["custom_branch_policies"]:
            problems.append("exactly one of protected_branches and custom_branch_policies must be true")
    return problems


def _rule_problems(index: int, rule: object) -> list[str]:
    where = f"rules[{index}]"
    if not isinstance(rule, dict) or not isinstance(rule.get("type"), str) or set(rule) - {"type", "parameters"}:
        return [f"{where} must be an object of type (and parameters)"]
    kind, parameters = rule["type"], rule.get("parameters")
    if kind in _PLAIN_RULES:
        return [] if parameters is None else [f"{where}: {kind} takes no parameters"]
    if not isinstance(parameters, dict):
        return (
            [f"{where}: {kind} needs parameters"]
            if kind in ("pull_request", "required_status_checks")
            else [f"{where}: unknown rule type {kind}"]
        )
    problems: list[str] = []
    if kind == "pull_request":
        for key, kind_of in _PULL_REQUEST_REQUIRED.items():
            value = parameters.get(key)
            ok = _is_int(value) if kind_of is int else isinstance(value, bool)
            if not ok:
                problems.append(f"{where}.parameters.{key} is required ({kind_of.__name__})")
        count = parameters.get("required_approving_review_count")
        if _is_int(count) and not 0 <= count <= 10:
            problems.append(f"{where}.parameters.required_approving_review_count must be 0 to 10")
        problems += [
            f"{where}.parameters: {p}"
            for p in _unknown_keys(parameters, set(_PULL_REQUEST_REQUIRED) | _PULL_REQUEST_OPTIONAL)
        ]
        methods = parameters.get("allowed_merge_methods")
        if methods is not None and (not isinstance(methods, list) or set(methods) - {"merge", "squash", "rebase"}):
            problems.append(f"{where}.parameters.allowed_merge_methods: merge, squash or rebase")
    elif kind == "required_status_checks":
        checks = parameters.get("required_status_checks")
        if not isinstance(checks, list):
            problems.append(f"{where}.parameters.required_status_checks is required (an array)")
        else:
            for number, check in enumerate(checks):
                if (
                    not isinstance(check, dict)
                    or not isinstance(check.get("context"), str)
                    or not check["context"]
                    or set(check) - {"context", "integration_id"}
                    or ("integration_id" in check and not _is_int(check["integration_id"]))
                ):
                    problems.append(
                        f"{where}.parameters.required_status_checks[{number}] must be {{context, integration_id?}}"
                    )
        if not isinstance(parameters.get("strict_required_status_checks_policy"), bool):
            problems.append(f"{where}.parameters.strict_required_status_checks_policy is required (bool)")
        if "do_not_enforce_on_create" in parameters and not isinstance(parameters["do_not_enforce_on_create"], bool):
            problems.append(f"{where}.parameters.do_not_enforce_on_create must be a boolean")
        problems += [
            f"{where}.parameters: {p}"
            for p in _unknown_keys(
                parameters,
                {"required_status_checks", "strict_required_status_checks_policy", "do_not_enforce_on_create"},
            )
        ]
    else:
        problems.append(f"{where}: unknown rule type {kind}")
    return problems


def ruleset_problems(body: object, *, creating: bool) -> list[str]:
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    problems = _unknown_keys(body, _RULESET_KEYS)
    if creating:
        problems += [f"{key} is required" for key in ("name", "enforcement") if key not in body]
    if "name" in body and (not isinstance(body["name"], str) or not body["name"]):
        problems.append("name must be a non-empty string")
    if "enforcement" in body and body["enforcement"] not in ("disabled", "active", "evaluate"):
        problems.append("enforcement must be disabled, active or evaluate")
    if "target" in body and body["target"] not in ("branch", "tag", "push"):
        problems.append("target must be branch, tag or push")
    if "bypass_actors" in body and not isinstance(body["bypass_actors"], list):
        problems.append("bypass_actors must be an array")
    if "conditions" in body:
        conditions = body["conditions"]
        if not isinstance(conditions, dict) or set(conditions) - {"ref_name"}:
            problems.append("conditions of a repository ruleset hold ref_name only")
        else:
            ref_name = conditions.get("ref_name")
            if not isinstance(ref_name, dict) or set(ref_name) - {"include", "exclude"}:
                problems.append("conditions.ref_name holds include and exclude")
            else:
                for key in ("include", "exclude"):
                    value = ref_name.get(key, [])
                    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                        problems.append(f"conditions.ref_name.{key} must be an array of strings")
    if "rules" in body:
        if not isinstance(body["rules"], list):
            problems.append("rules must be an array")
        else:
            for index, rule in enumerate(body["rules"]):
                problems += _rule_problems(index, rule)
            kinds = [rule.get("type") for rule in body["rules"] if isinstance(rule, dict)]
            if len(kinds) != len(set(kinds)):
                problems.append("each rule type may appear once")
    return problems


def _with_defaults(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules as GET answers them: the optional parameters GitHub fills in are there."""
    filled = copy.deepcopy(rules)
    for rule in filled:
        parameters = rule.get("parameters")
        if rule.get("type") == "pull_request" and isinstance(parameters, dict):
            parameters.setdefault("allowed_merge_methods", ["merge", "squash", "rebase"])
            parameters.setdefault("automatic_copilot_code_review_enabled", False)
        if rule.get("type") == "required_status_checks" and isinstance(parameters, dict):
            parameters.setdefault("do_not_enforce_on_create", False)
    return filled


# -- state -------------------------------------------------------------------------------------------


@dataclass
class _Environment:
    id: int
    name: str
    reviewers: list[dict[str, Any]] = field(default_factory=list)
    prevent_self_review: bool = False
    wait_timer: int = 0
    branch_policy: dict[str, bool] | None = None
    policies: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)


class RepoSettings:
    """Repositories, users, teams and each repository's environments and rulesets, as the stand-in holds them."""

    def __init__(self) -> None:
        self.administration = True  # False: the token may read but not change settings (403 on writes)
        self._lock = threading.Lock()
        self._ids = itertools.count(1000)
        self._repos: dict[str, dict[str, Any]] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._teams: dict[str, dict[str, Any]] = {}
        self._environments: dict[tuple[str, str], _Environment] = {}
        self._rulesets: dict[str, list[dict[str, Any]]] = {}

    # seeding, for tests
    def add_repository(self, full_name: str, *, default_branch: str = "main") -> None:
        owner, name = full_name.split("/")
        with self._lock:
            self._repos[full_name.lower()] = {
                "id": next(self._ids),
                "name": name,
                "full_name": full_name,
                "owner": {"login": owner},
                "private": False,
                "default_branch": default_branch,
            }

    def add_user(self, login: str, user_id: int) -> None:
        with self._lock:
            self._users[login.lower()] = {"login": login, "id": user_id, "type": "User"}

    def add_team(self, org: str, slug: str, team_id: int) -> None:
        with self._lock:
            self._teams[f"{org}/{slug}".lower()] = {
                "id": team_id,
                "slug": slug,
                "name": slug,
                "organization": {"login": org},
            }

    def environment(self, repo: str, name: str) -> dict[str, Any] | None:
        """The environment as GET answers it, or None."""
        with self._lock:
            found = self._environments.get((repo.lower(), name.lower()))
            return self._environment_json(repo, found) if found else None

    def branch_policies(self, repo: str, name: str) -> list[dict[str, Any]]:
        with self._lock:
            found = self._environments.get((repo.lower(), name.lower()))
            return copy.deepcopy(found.policies) if found else []

    def rulesets(self, repo: str) -> list[dict[str, Any]]:
        """The repository's rulesets, whole (copies)."""
        with self._lock:
            return copy.deepcopy(self._rulesets.get(repo.lower(), []))

    # routing
    def handle(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: Any, parsed: bool
    ) -> Reply | None:
        """The reply to a settings request, or None when the path is none of these endpoints."""
        parts = [unquote(part) for part in parts]
        if method in ("PUT", "POST", "PATCH") and not parsed:
            return HTTPStatus.BAD_REQUEST, {"message": "Problems parsing JSON"}, {}
        with self._lock:
            if parts[:1] == ["users"] and len(parts) == 2 and method == "GET":
                user = self._users.get(parts[1].lower())
                return (HTTPStatus.OK, dict(user), {}) if user else _not_found()
            if parts[:1] == ["orgs"] and len(parts) == 4 and parts[2] == "teams" and method == "GET":
                team = self._teams.get(f"{parts[1]}/{parts[3]}".lower())
                return (HTTPStatus.OK, dict(team), {}) if team else _not_found()
            if parts[:1] != ["repos"] or len(parts) < 3:
                return None
            repo_key = f"{parts[1]}/{parts[2]}".lower()
            repo = self._repos.get(repo_key)
            rest = parts[3:]
            if repo is None:
                return _not_found() if not rest or rest[0] in ("environments", "rulesets") else None
            if not rest:
                return (HTTPStatus.OK, dict(repo), {}) if method == "GET" else _not_found()
            if rest[0] == "environments" and len(rest) >= 2:
                return self._environments_endpoint(method, repo, rest[1:], query, body)
            if rest[0] == "rulesets":
                return self._rulesets_endpoint(method, repo, rest[1:], query, body)
            return None

    def _refused(self, method: str) -> Reply | None:
        if method != "GET" and not self.administration:
            return HTTPStatus.FORBIDDEN, {"message": NOT_ACCESSIBLE, "documentation_url": _DOCS, "status": "403"}, {}
        return None

    def _environment_json(self, repo: str, env: _Environment) -> dict[str, Any]:
        rules: list[dict[str, Any]] = []
        if env.reviewers:
            rules.append(
                {
                    "id": env.id * 10 + 1,
                    "type": "required_reviewers",
                    "prevent_self_review": env.prevent_self_review,
                    "reviewers": copy.deepcopy(env.reviewers),
                }
            )
        if env.wait_timer:
            rules.append({"id": env.id * 10 + 2, "type": "wait_timer", "wait_timer": env.wait_timer})
        if env.branch_policy is not None:
            rules.append({"id": env.id * 10 + 3, "type": "branch_policy"})
        return {
            "id": env.id,
            "name": env.name,
            "url": f"https://api.github.com/repos/{repo}/environments/{env.name}",
            "html_url": f"https://github.com/{repo}/deployments/activity_log?environments_filter={env.name}",
            "created_at": env.created_at,
            "updated_at": env.updated_at,
            "protection_rules": rules,
            "deployment_branch_policy": copy.deepcopy(env.branch_policy),
        }

    def _environments_endpoint(
        self, method: str, repo: dict[str, Any], rest: list[str], query: dict[str, list[str]], body: Any
    ) -> Reply | None:
        full_name = repo["full_name"]
        key = (full_name.lower(), rest[0].lower())
        env = self._environments.get(key)
        if len(rest) == 1:
            if method == "GET":
                return (HTTPStatus.OK, self._environment_json(full_name, env), {}) if env else _not_found()
            if method != "PUT":
                return _not_found()
            if refused := self._refused(method):
                return refused
            if problems := environment_problems(body):
                return _invalid(*problems)
            body = body or {}
            reviewers: list[dict[str, Any]] = []
            for reviewer in body.get("reviewers") or []:
                known = self._users.values() if reviewer["type"] == "User" else self._teams.values()
                match = next((item for item in known if item["id"] == reviewer["id"]), None)
                if match is None:
                    return _invalid(f"reviewer {reviewer['type']} {reviewer['id']} does not exist")
                reviewers.append({"type": reviewer["type"], "reviewer": dict(match)})
            if env is None:
                env = _Environment(id=next(self._ids), name=rest[0])
                self._environments[key] = env
            env.reviewers = reviewers  # GitHub replaces them; keys not sent keep no old value either
            env.prevent_self_review = bool(body.get("prevent_self_review", False))
            env.wait_timer = int(body.get("wait_timer", 0))
            env.branch_policy = copy.deepcopy(body.get("deployment_branch_policy"))
            if not (env.branch_policy or {}).get("custom_branch_policies"):
                env.policies = []
            env.updated_at = _now()
            return HTTPStatus.OK, self._environment_json(full_name, env), {}
        if len(rest) == 2 and rest[1] == "deployment-branch-policies":
            if env is None or not (env.branch_policy or {}).get("custom_branch_policies"):
                return _not_found()
            if method == "GET":
                listed = copy.deepcopy(env.policies)
                return HTTPStatus.OK, {"total_count": len(listed), "branch_policies": _page(listed, query)}, {}
            if method != "POST":
                return _not_found()
            if refused := self._refused(method):
                return refused
            if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
                return _invalid("name is required (a string)")
            kind = body.get("type", "branch")
            if kind not in ("branch", "tag"):
                return _invalid("type must be branch or tag")
            for policy in env.policies:
                if policy["name"] == body["name"] and policy["type"] == kind:
                    location = f"/repos/{full_name}/environments/{env.name}/deployment-branch-policies/{policy['id']}"
                    return HTTPStatus.SEE_OTHER, copy.deepcopy(policy), {"Location": location}
            policy_id = next(self._ids)
            policy = {
                "id": policy_id,
                "node_id": f"MDE2OkdhdGVCcmFuY2hQb2xpY3k{policy_id}",
                "name": body["name"],
                "type": kind,
            }
            env.policies.append(policy)
            return HTTPStatus.OK, copy.deepcopy(policy), {}
        return None

    def _ruleset_json(self, ruleset: dict[str, Any], *, whole: bool) -> dict[str, Any]:
        shown = copy.deepcopy(ruleset)
        if not whole:
            for key in ("rules", "conditions", "bypass_actors"):
                shown.pop(key, None)
        else:
            shown["rules"] = _with_defaults(shown.get("rules", []))
        return shown

    def _rulesets_endpoint(
        self, method: str, repo: dict[str, Any], rest: list[str], query: dict[str, list[str]], body: Any
    ) -> Reply | None:
        full_name = repo["full_name"]
        rulesets = self._rulesets.setdefault(full_name.lower(), [])
        if not rest:
            if method == "GET":
                return HTTPStatus.OK, _page([self._ruleset_json(item, whole=False) for item in rulesets], query), {}
            if method != "POST":
                return _not_found()
            if refused := self._refused(method):
                return refused
            if problems := ruleset_problems(body, creating=True):
                return _invalid(*problems)
            if any(item["name"] == body["name"] for item in rulesets):
                return _invalid("Name must be unique")
            ruleset_id = next(self._ids)
            now = _now()
            ruleset = {
                "id": ruleset_id,
                "name": body["name"],
                "target": body.get("target", "branch"),
                "source_type": "Repository",
                "source": full_name,
                "enforcement": body["enforcement"],
                "bypass_actors": copy.deepcopy(body.get("bypass_actors", [])),
                "conditions": copy.deepcopy(body.get("conditions", {})),
                "rules": copy.deepcopy(body.get("rules", [])),
                "node_id": f"RRS_{ruleset_id}",
                "created_at": now,
                "updated_at": now,
                "_links": {"self": {"href": f"https://api.github.com/repos/{full_name}/rulesets/{ruleset_id}"}},
            }
            rulesets.append(ruleset)
            return HTTPStatus.CREATED, self._ruleset_json(ruleset, whole=True), {}
        if len(rest) != 1 or not rest[0].isdigit():
            return _not_found()
        ruleset = next((item for item in rulesets if item["id"] == int(rest[0])), None)
        if ruleset is None:
            return _not_found()
        if method == "GET":
            return HTTPStatus.OK, self._ruleset_json(ruleset, whole=True), {}
        if method != "PUT":
            return _not_found()
        if refused := self._refused(method):
            return refused
        if problems := ruleset_problems(body, creating=False):
            return _invalid(*problems)
        if "name" in body and any(item["name"] == body["name"] and item is not ruleset for item in rulesets):
            return _invalid("Name must be unique")
        for key in _RULESET_KEYS:
            if key in body:
                ruleset[key] = copy.deepcopy(body[key])
        ruleset["updated_at"] = _now()
        return HTTPStatus.OK, self._ruleset_json(ruleset, whole=True), {}


__all__ = ["NOT_ACCESSIBLE", "RepoSettings", "environment_problems", "ruleset_problems"]
