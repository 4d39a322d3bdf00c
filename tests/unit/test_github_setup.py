"""`mlgate github setup` against the loopback GitHub API stand-in, which checks each payload's documented shape."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlgate.cli import main
from mlgate.github.checks import ML_CI_GATES
from mlgate.github.setup import RULESET_NAME, parse_remote_url

from tests.e2e.github_api import GitHubApiStandin

ROOT = Path(__file__).resolve().parents[2]
REPO = "example/fraud-detection"
CANARY = "ghp_canaryCANARYcanary0123456789"
USER_ID, TEAM_ID = 583231, 4242
GATES = ["ml-ci / lint", "ml-ci / validate-data", "ml-ci / train", "ml-ci / test-model", "ml-ci / compress"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mlgate.yaml").write_text("version: 1\nproject: demo\n")
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    shutil.copy(ROOT / "workflows" / "mlgate-pr.yml", workflows / "pr.yml")
    shutil.copy(ROOT / "workflows" / "mlgate-train.yml", workflows / "train.yml")  # push only: no PR checks
    monkeypatch.chdir(tmp_path)
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_REPOSITORY", "GITHUB_ACTIONS", "GITHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def api(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubApiStandin]:
    with GitHubApiStandin(token=CANARY) as standin:
        standin.settings.add_repository(REPO, default_branch="main")
        standin.settings.add_user("octocat", USER_ID)
        standin.settings.add_team("example", "ml-leads", TEAM_ID)
        monkeypatch.setenv("GITHUB_API_URL", standin.url)
        monkeypatch.setenv("GITHUB_TOKEN", CANARY)
        yield standin


def setup(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    """`mlgate github setup` for REPO with two reviewers and `extra`; the token never shows, nor a traceback."""
    code = main(["github", "setup", "--repo", REPO, "--reviewer", "octocat", "--reviewer", "example/ml-leads", *extra])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert CANARY not in text
    assert "Traceback" not in text
    return code, text


def writes(api: GitHubApiStandin, since: int = 0) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in api.requests[since:] if r.method != "GET"]


def contexts(api: GitHubApiStandin) -> list[str]:
    (ruleset,) = api.settings.rulesets(REPO)
    (checks,) = [rule for rule in ruleset["rules"] if rule["type"] == "required_status_checks"]
    return [check["context"] for check in checks["parameters"]["required_status_checks"]]


def test_dry_run_without_token_prints_the_plan(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = setup(capsys)
    assert code == 0
    assert "mlgate github setup (dry run): example/fraud-detection (from --repo)" in out
    assert "GET /users/octocat  (the id of reviewer octocat)" in out
    assert "GET /orgs/example/teams/ml-leads" in out
    assert "PUT /repos/example/fraud-detection/environments/production" in out
    assert '"custom_branch_policies": true' in out
    assert "POST /repos/example/fraud-detection/rulesets" in out
    for gate in GATES:
        assert f'"context": "{gate}"' in out
    assert '"~DEFAULT_BRANCH"' in out
    assert "run again with --apply" in out


def test_dry_run_with_token_looks_up_and_writes_nothing(
    api: GitHubApiStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = setup(capsys)
    assert code == 0
    assert api.requests and writes(api) == []
    assert "default branch: main" in out
    assert f'"id": {USER_ID}' in out and f'"id": {TEAM_ID}' in out
    assert "environment production: create" in out
    assert '"name": "main"' in out
    assert api.settings.environment(REPO, "production") is None and api.settings.rulesets(REPO) == []


def test_apply_sets_everything_up_then_changes_nothing(
    api: GitHubApiStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = setup(capsys, "--apply")
    assert code == 0, out
    assert "environment production: created" in out
    assert "deployment branch policy main: created" in out
    assert f"ruleset '{RULESET_NAME}': created" in out
    assert writes(api) == [
        ("PUT", f"/repos/{REPO}/environments/production"),
        ("POST", f"/repos/{REPO}/environments/production/deployment-branch-policies"),
        ("POST", f"/repos/{REPO}/rulesets"),
    ]
    environment = api.settings.environment(REPO, "production")
    assert environment is not None
    (reviewers,) = [rule for rule in environment["protection_rules"] if rule["type"] == "required_reviewers"]
    assert {(r["type"], r["reviewer"]["id"]) for r in reviewers["reviewers"]} == {("User", USER_ID), ("Team", TEAM_ID)}
    assert environment["deployment_branch_policy"] == {"protected_branches": False, "custom_branch_policies": True}
    assert [(p["name"], p["type"]) for p in api.settings.branch_policies(REPO, "production")] == [("main", "branch")]
    (ruleset,) = api.settings.rulesets(REPO)
    assert (ruleset["name"], ruleset["target"], ruleset["enforcement"]) == (RULESET_NAME, "branch", "active")
    assert ruleset["conditions"] == {"ref_name": {"include": ["~DEFAULT_BRANCH"], "exclude": []}}
    assert {rule["type"] for rule in ruleset["rules"]} == {"pull_request", "required_status_checks"}
    assert contexts(api) == GATES

    before = len(api.requests)
    code, out = setup(capsys, "--apply")
    assert code == 0
    assert writes(api, before) == []
    assert "mlgate github setup: 0 changed, 3 unchanged" in out
    code, out = setup(capsys)
    assert "everything is set up already" in out


def test_a_changed_reviewer_and_a_switched_off_gate_update_in_place(
    api: GitHubApiStandin, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup(capsys, "--apply")[0] == 0
    ruleset_id = api.settings.rulesets(REPO)[0]["id"]
    workflow = project / ".github" / "workflows" / "pr.yml"
    workflow.write_text(
        workflow.read_text().replace("      config: mlgate.yaml\n", "      config: mlgate.yaml\n      lint: false\n")
    )
    before = len(api.requests)
    code = main(["github", "setup", "--repo", REPO, "--reviewer", "octocat", "--apply"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "environment production: updated" in out
    assert "deployment branch policy main: unchanged" in out
    assert f"ruleset '{RULESET_NAME}': updated" in out
    assert writes(api, before) == [
        ("PUT", f"/repos/{REPO}/environments/production"),
        ("PUT", f"/repos/{REPO}/rulesets/{ruleset_id}"),
    ]
    assert contexts(api) == [gate for gate in GATES if gate != "ml-ci / lint"]


def test_a_caller_with_lint_false_drops_that_check(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = project / ".github" / "workflows" / "pr.yml"
    text = workflow.read_text().replace("      config: mlgate.yaml\n", "      config: mlgate.yaml\n      lint: false\n")
    workflow.write_text(text.replace("  ml-ci:\n", "  gates:\n"))
    code, out = setup(capsys)
    assert code == 0
    assert "ml-ci / lint" not in out and "gates / lint" not in out
    assert '"context": "gates / validate-data"' in out and '"context": "gates / compress"' in out


def test_a_token_without_administration_is_refused_with_the_fix(
    api: GitHubApiStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    api.settings.administration = False
    code, out = setup(capsys, "--apply")
    assert code == 3
    assert f"GitHub refused PUT /repos/{REPO}/environments/production (create or update an environment)" in out
    assert "403 Resource not accessible by integration" in out
    assert '"Administration: write"' in out and "`repo` scope" in out
    assert "hint: set GITHUB_TOKEN" in out
    assert api.settings.environment(REPO, "production") is None


def test_apply_without_a_token(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = setup(capsys, "--apply")
    assert code == 3
    assert "--apply needs a GitHub token, and neither GITHUB_TOKEN nor GH_TOKEN is set" in out
    assert "Administration: write" in out


def test_no_reviewer_is_an_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["github", "setup", "--repo", REPO]) == 3
    assert "no required reviewer given" in capsys.readouterr().out


def test_an_unknown_reviewer_is_named(api: GitHubApiStandin, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["github", "setup", "--repo", REPO, "--reviewer", "no-such-person", "--apply"])
    out = capsys.readouterr()
    assert code == 3
    assert "reviewer no-such-person: no such GitHub user (404 Not Found)" in out.out
    assert CANARY not in out.out + out.err
    assert writes(api) == []


def test_a_bad_token_and_an_unreachable_api(
    api: GitHubApiStandin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not_the_token_at_all_0000")
    assert main(["github", "setup", "--repo", REPO, "--reviewer", "octocat"]) == 3
    out = capsys.readouterr()
    assert "GitHub rejected the token" in out.out and "ghp_not_the_token" not in out.out + out.err

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    code, out_text = setup(capsys)
    assert code == 4
    assert f"cannot reach GitHub's API at 127.0.0.1:{port}" in out_text


def test_the_repository_comes_from_the_origin_remote_without_its_credentials(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cretTOKENinTheRemote"
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    remote = f"https://x-access-token:{secret}@github.com/{REPO}.git"
    subprocess.run(["git", "-C", str(project), "remote", "add", "origin", remote], check=True)
    assert main(["github", "setup", "--reviewer", "octocat"]) == 0
    captured = capsys.readouterr()
    assert f"dry run): {REPO} (from the git remote origin)" in captured.out
    assert secret not in captured.out + captured.err


@pytest.mark.parametrize(
    "url",
    [
        f"https://github.com/{REPO}.git",
        f"https://user:pw@github.com/{REPO}",
        f"git@github.com:{REPO}.git",
        f"ssh://git@github.com/{REPO}.git",
        f"ssh://git@ghe.example.com:2222/{REPO}",
    ],
)
def test_remote_url_forms(url: str) -> None:
    parsed = parse_remote_url(url)
    assert parsed is not None and parsed.full_name == REPO


def test_the_gates_match_ml_ci_yml() -> None:
    # ML_CI_GATES names ml-ci.yml's jobs and the inputs of each one's `if:`; a new gate must be added there.
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "ml-ci.yml").read_text())["jobs"]
    assert [gate for gate, _ in ML_CI_GATES] == list(jobs)
    for gate, inputs in ML_CI_GATES:
        assert jobs[gate].get("name", gate) == gate  # the check is named after the job's name, else its id
        condition = str(jobs[gate].get("if", ""))
        assert sorted(set(re.findall(r"inputs\.([a-z-]+)", condition))) == sorted(inputs), gate


def _call(api: GitHubApiStandin, method: str, path: str, payload: object) -> int:
    request = urllib.request.Request(
        f"{api.url}{path}",
        data=json.dumps(payload).encode(),
        method=method,
        headers={"Authorization": f"Bearer {CANARY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_standin_refuses_what_github_refuses(api: GitHubApiStandin) -> None:
    env = f"/repos/{REPO}/environments/production"
    assert _call(api, "PUT", env, {"reviewers": [{"type": "User", "id": USER_ID}], "colour": "red"}) == 422
    assert _call(api, "PUT", env, {"reviewers": [{"type": "Person", "id": USER_ID}]}) == 422
    both = {"protected_branches": True, "custom_branch_policies": True}
    assert _call(api, "PUT", env, {"deployment_branch_policy": both}) == 422
    assert _call(api, "PUT", env, {"reviewers": [{"type": "User", "id": USER_ID}]}) == 200
    # Custom branch policies are off for that environment: GitHub answers 404.
    assert _call(api, "POST", f"{env}/deployment-branch-policies", {"name": "main"}) == 404
    rulesets = f"/repos/{REPO}/rulesets"
    assert _call(api, "POST", rulesets, {"name": "x"}) == 422  # enforcement is required
    assert _call(api, "POST", rulesets, {"name": "x", "enforcement": "on"}) == 422
    assert _call(api, "POST", rulesets, {"name": "x", "enforcement": "active", "extra": 1}) == 422
    bad_rule = {"type": "pull_request", "parameters": {"required_approving_review_count": 1}}
    assert _call(api, "POST", rulesets, {"name": "x", "enforcement": "active", "rules": [bad_rule]}) == 422
    assert _call(api, "POST", rulesets, {"name": "x", "enforcement": "active"}) == 201
    assert _call(api, "POST", rulesets, {"name": "x", "enforcement": "active"}) == 422  # names are unique
    assert _call(api, "PUT", f"{rulesets}/999999", {"name": "y"}) == 404
