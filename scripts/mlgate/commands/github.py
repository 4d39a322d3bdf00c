"""`mlgate github setup`: a model repository's production environment and required PR checks, in one command."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mlgate.commands.arguments import add_config_argument
from mlgate.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mlgate.github.setup import DEFAULT_ENVIRONMENT, RULESET_NAME

    actions = parser.add_subparsers(dest="github_command", metavar="ACTION", required=True)
    setup = actions.add_parser(
        "setup",
        help="create or update the deployment environment and the ruleset requiring the PR gates (dry run by default)",
        description="Create or update, through GitHub's REST API, the deployment environment (required reviewers, "
        "deployments from the default branch only) and a ruleset that makes the PR gates of the project's workflows "
        "required checks on the default branch. Prints the plan and changes nothing unless --apply is given. "
        "Token: GITHUB_TOKEN or GH_TOKEN, of a repository admin (fine-grained: Administration write; classic: repo).",
    )
    add_config_argument(setup)
    setup.add_argument(
        "--reviewer",
        action="append",
        default=[],
        metavar="USER|ORG/TEAM",
        help="a required reviewer of the environment's deployments: a user login or ORG/TEAM-SLUG (repeatable, 1 to 6)",
    )
    setup.add_argument(
        "--environment", default=DEFAULT_ENVIRONMENT, help=f"deployment environment (default: {DEFAULT_ENVIRONMENT})"
    )
    setup.add_argument("--repo", help="OWNER/NAME (default: GITHUB_REPOSITORY, else the project's git remote origin)")
    setup.add_argument(
        "--approvals",
        type=int,
        default=0,
        help="approving reviews a pull request needs before it merges (0 to 10; default 0: the checks gate the merge)",
    )
    setup.add_argument("--ruleset-name", default=RULESET_NAME, help=f"name of the ruleset (default: {RULESET_NAME!r})")
    setup.add_argument("--apply", action="store_true", help="make the changes (default: print the plan only)")


def _payload_lines(payload: object) -> list[str]:
    return ["    " + line for line in json.dumps(payload, indent=2).splitlines()]


def run(args: argparse.Namespace) -> int:
    from mlgate.github.api import GitHubApi, api_url, token_from_environment
    from mlgate.github.checks import required_checks
    from mlgate.github.setup import TOKEN_HINT, SetupRequest, apply, parse_reviewer, plan, resolve_repository

    project_root = Path(args.config).absolute().parent
    reviewers = [parse_reviewer(text) for text in args.reviewer]
    repository, source = resolve_repository(args.repo, project_root, os.environ)
    checks, callers = required_checks(project_root)
    request = SetupRequest(
        repository=repository,
        repository_source=source,
        environment=args.environment,
        reviewers=reviewers,
        checks=checks,
        check_sources=[f"{_shown(caller.workflow)} job {caller.job}" for caller in callers],
        approvals=args.approvals,
        ruleset_name=args.ruleset_name,
    )
    token = token_from_environment()
    if args.apply and not token:
        raise InputError("--apply needs a GitHub token, and neither GITHUB_TOKEN nor GH_TOKEN is set", hint=TOKEN_HINT)
    api = GitHubApi(api_url(), token) if token else None
    result = apply(request, api) if args.apply and api is not None else plan(request, api)

    mode = "apply" if result.applied else "dry run"
    print(f"mlgate github setup ({mode}): {result.repository.full_name} (from {result.repository_source})")
    print(f"required checks, from {'; '.join(result.check_sources)}:")
    for check in result.checks:
        print(f"  {check}")
    if not result.resolved:
        print("no token (GITHUB_TOKEN or GH_TOKEN): these lookups are not made, their results show as <...>:")
        for lookup in result.lookups:
            print(f"  {lookup.method} {lookup.path}  ({lookup.why})")
    else:
        print(f"default branch: {result.default_branch}")
    for piece in result.pieces:
        if result.applied:
            print(f"{piece.what}: {piece.done}")
            if piece.write is not None:
                print(f"  {piece.write.method} {piece.write.path}")
        else:
            state = "create or update (not looked up without a token)" if piece.outcome == "unknown" else piece.outcome
            print(f"{piece.what}: {state}")
            if piece.write is not None:
                why = f"  ({piece.write.why})" if piece.write.why else ""
                print(f"  {piece.write.method} {piece.write.path}{why}")
                print("\n".join(_payload_lines(piece.write.payload)))
        for note in piece.notes:
            print(f"  note: {note}")
    if result.applied:
        changed = sum(piece.done in ("created", "updated") for piece in result.pieces)
        print(f"mlgate github setup: {changed} changed, {len(result.pieces) - changed} unchanged")
    elif result.changes:
        which = "these changes" if result.changes > 1 else "this change"
        print(f"dry run: nothing was changed; run again with --apply to make {which}")
    else:
        print("dry run: everything is set up already; --apply would change nothing")
    return 0


def _shown(path: Path) -> str:
    from mlgate.gha import cwd_relative

    return cwd_relative(str(path))
