"""The workflow policy checks of test_workflows.py, shown failing on workflows that break each rule.

test_workflows.py applies them to every workflow in the repository, where they pass; these cases
prove each one can fail, and with a message that says what to change.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import test_workflows as checks

pytestmark = pytest.mark.static

CHECKOUT = "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1"


def workflow(tmp_path: Path, text: str, name: str = "release.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def deploy(concurrency: str = "", job_concurrency: str = "", grant: str = "contents: read # check out") -> str:
    """A reusable release workflow's production job, like the one ml-release.yml declares."""
    return f"""
    on:
      workflow_call:
    permissions: {{}}
    {concurrency}
    jobs:
      production:
        name: production
        runs-on: ubuntu-latest
        environment: production
        {job_concurrency}
        permissions:
          {grant}
        steps:
          - run: echo deploy
    """


def test_pull_request_target_is_refused(tmp_path: Path) -> None:
    path = workflow(tmp_path, "on: [pull_request_target]\npermissions: {}\njobs: {}\n")
    [problem] = checks.privileged_triggers(path)
    assert "triggers on `pull_request_target`" in problem and "use `pull_request`" in problem
    assert checks.privileged_triggers(workflow(tmp_path, "on: pull_request\njobs: {}\n", "ok.yml")) == []


def test_secrets_inherit_is_refused(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        permissions: {}
        jobs:
          call:
            uses: mlgate/mlgate/.github/workflows/ml-ci.yml@v1
            secrets: inherit
        """,
    )
    assert checks.inherited_secrets(path) == [
        f"{path}: jobs.call: `secrets: inherit`; pass each secret the called workflow declares"
    ]


def test_unpinned_action_and_docker_image_are_refused(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        permissions: {}
        jobs:
          build:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/checkout@v7
              - uses: docker://alpine:3.20
              - uses: ./local-action
              - uses: mlgate/mlgate/actions/lint@v1
        """,
    )
    problems = checks.unpinned_uses(path)
    assert len(problems) == 2, problems
    assert "`actions/checkout@v7`: not pinned to a 40-hex commit sha" in problems[0]
    assert "`docker://alpine:3.20`: pin the image by digest" in problems[1]


def test_environment_job_needs_a_concurrency_group(tmp_path: Path) -> None:
    [problem] = checks.unguarded_environments(workflow(tmp_path, deploy()))
    assert "jobs.production (environment 'production'): no `concurrency` group" in problem


@pytest.mark.parametrize(
    ("concurrency", "job_concurrency", "level"),
    [
        ("", "concurrency: {group: deploy, cancel-in-progress: true}", "job"),
        ("concurrency: {group: deploy, cancel-in-progress: true}", "", "workflow"),
        # the workflow-level group cancels the whole run, job included, whatever the job says
        (
            "concurrency: {group: run, cancel-in-progress: '${{ github.event_name == ''push'' }}'}",
            "concurrency: {group: deploy, cancel-in-progress: false}",
            "workflow",
        ),
    ],
)
def test_environment_job_is_never_cancelled(tmp_path: Path, concurrency: str, job_concurrency: str, level: str) -> None:
    [problem] = checks.unguarded_environments(workflow(tmp_path, deploy(concurrency, job_concurrency)))
    assert f"the {level}'s concurrency has `cancel-in-progress:" in problem
    assert "set it to false (or leave it out)" in problem


@pytest.mark.parametrize(
    "job_concurrency",
    [
        "concurrency: {group: 'deploy-${{ inputs.model }}', cancel-in-progress: false}",
        "concurrency: {group: deploy}",
        "concurrency: deploy",
    ],
)
def test_environment_job_with_a_non_cancelling_group_passes(tmp_path: Path, job_concurrency: str) -> None:
    assert checks.unguarded_environments(workflow(tmp_path, deploy(job_concurrency=job_concurrency))) == []


def test_write_permission_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = workflow(tmp_path, deploy(concurrency="concurrency: deploy", grant="id-token: write"))
    [problem] = checks.uncommented_permissions(path)
    assert ":12: jobs.production.permissions.id-token: write without a comment" in problem
    assert "a write permission nothing explains is one to remove" in problem
    explained = workflow(tmp_path, deploy(grant="id-token: write # OIDC to the registry"), "explained.yml")
    assert checks.uncommented_permissions(explained) == []


def test_blanket_job_permissions_are_refused(tmp_path: Path) -> None:
    path = workflow(tmp_path, deploy(grant="").replace("permissions:\n", "permissions: write-all\n"))
    [problem] = checks.uncommented_permissions(path)
    assert "`permissions: write-all`; grant each scope the job uses" in problem


ANONYMOUS_JOB = """
name: build
on: push
permissions: {}
concurrency: {group: build, cancel-in-progress: true}
jobs:
  build:COMMENT
    runs-on: ubuntu-latest
    permissions:
      contents: read # check out
    steps:
      - uses: CHECKOUT
        with:
          persist-credentials: false
""".replace("CHECKOUT", CHECKOUT)


def anonymous_job(comment: str = "") -> str:
    return ANONYMOUS_JOB.replace("COMMENT", comment)


def test_zizmor_pedantic_finding_fails(tmp_path: Path) -> None:
    path = workflow(tmp_path, anonymous_job())
    done = checks.run_tool(checks.zizmor_command(path))
    assert done.returncode != 0 and "anonymous-definition" in done.stdout + done.stderr


def test_zizmor_ignore_needs_a_reason(tmp_path: Path) -> None:
    bare = workflow(tmp_path, anonymous_job(" # zizmor: ignore[anonymous-definition]"))
    assert checks.run_tool(checks.zizmor_command(bare)).returncode == 0  # zizmor itself accepts it
    [problem] = checks.unexplained_zizmor_ignores(bare)
    assert "needs its reason on the same line" in problem

    reasoned = " # zizmor: ignore[anonymous-definition] the job id is the check name callers require"
    assert checks.unexplained_zizmor_ignores(workflow(tmp_path, anonymous_job(reasoned), "ok.yml")) == []


def test_stale_zizmor_ignore_is_refused(tmp_path: Path) -> None:
    text = anonymous_job().replace("  build:", "  build:\n    name: build")
    text = text.replace(
        "runs-on: ubuntu-latest", "runs-on: ubuntu-latest # zizmor: ignore[excessive-permissions] was needed once"
    )
    [problem] = checks.unexplained_zizmor_ignores(workflow(tmp_path, text))
    assert "silences nothing here" in problem
