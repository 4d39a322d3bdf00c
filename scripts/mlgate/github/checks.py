"""The names of the PR gates' checks, read from the project's workflows that call mlgate's ml-ci.yml.

GitHub names the check of a job in a called workflow `<caller job> / <called job>`: the caller job's
`name:` (else its id), then the called job's (ml-ci.yml's jobs have no `name:`, so their ids). A
gate the caller switches off (`lint: false`) never reports, and a required check that never
reports blocks every merge, so it is left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate.errors import InputError
from mlgate.paths import workflow_files
from mlgate.yamlio import load_yaml_file

# ml-ci.yml's PR gates in the order they run: each job id, and the caller inputs that must all be on
# for it to run (its `if:`). tests/unit/test_github_setup.py holds this to .github/workflows/ml-ci.yml.
ML_CI_GATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lint", ("lint",)),
    ("validate-data", ()),
    ("train", ("train",)),
    ("test-model", ("train", "test-model")),
    ("compress", ("train", "compress")),
)
_ML_CI = re.compile(r"(?:^|/)\.github/workflows/ml-ci\.ya?ml(?:@|$)")
# The events on which GitHub runs a pull request's checks; a caller on `push` only reports none there.
_PR_EVENTS = frozenset({"pull_request", "pull_request_target", "merge_group"})


@dataclass(frozen=True)
class GateCaller:
    """One job calling ml-ci.yml on pull requests, and the check names its gates report under."""

    workflow: Path
    job: str
    checks: tuple[str, ...]
    switched_off: tuple[str, ...]


def _events(document: dict[Any, Any]) -> set[str]:
    # YAML 1.1 reads a bare `on` key as the boolean True.
    on = document.get("on", document.get(True))
    if isinstance(on, str):
        return {on}
    if isinstance(on, list):
        return {str(event) for event in on}
    if isinstance(on, dict):
        return {str(event) for event in on}
    return set()


def _is_off(value: object) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def gate_callers(project_root: Path) -> list[GateCaller]:
    """Every job of the project's workflows that calls ml-ci.yml on pull requests, in file order."""
    callers: list[GateCaller] = []
    for workflow in workflow_files(project_root):
        document = load_yaml_file(workflow, InputError, what="not a readable workflow: ").data
        if not isinstance(document, dict) or not (_events(document) & _PR_EVENTS):
            continue
        jobs = document.get("jobs")
        if not isinstance(jobs, dict):
            continue
        for job_id, job in jobs.items():
            if not isinstance(job, dict) or not _ML_CI.search(str(job.get("uses", ""))):
                continue
            if "strategy" in job:
                raise InputError(
                    f"{workflow}: job {job_id} calls ml-ci.yml with a matrix, whose check names depend on its values",
                    hint="call ml-ci.yml from a job without `strategy:`, or make the checks required by hand",
                    file=str(workflow),
                )
            name = job.get("name", job_id)
            if not isinstance(name, str | int) or "${{" in str(name):
                raise InputError(
                    f"{workflow}: job {job_id}'s name is an expression, so its check names are known only at run time",
                    hint="give the job calling ml-ci.yml a literal `name:` (or none: its id is used)",
                    file=str(workflow),
                )
            given = job.get("with")
            inputs: dict[str, object] = given if isinstance(given, dict) else {}
            off = tuple(
                key for key in dict.fromkeys(k for _, keys in ML_CI_GATES for k in keys) if _is_off(inputs.get(key))
            )
            checks = tuple(f"{name} / {gate}" for gate, needs in ML_CI_GATES if not set(needs) & set(off))
            callers.append(GateCaller(workflow=workflow, job=str(job_id), checks=checks, switched_off=off))
    return callers


def required_checks(project_root: Path) -> tuple[list[str], list[GateCaller]]:
    """The check names to require (each once, in order) and the callers they come from; InputError when none."""
    callers = gate_callers(project_root)
    if not callers:
        raise InputError(
            f"no workflow of {project_root} calls mlgate's ml-ci.yml on pull requests: there is no PR gate to require",
            hint="copy workflows/mlgate-pr.yml to .github/workflows/ (README, quick start step 2), "
            "or pass --config for the project whose workflows call it",
        )
    names = list(dict.fromkeys(check for caller in callers for check in caller.checks))
    return names, callers


__all__ = ["ML_CI_GATES", "GateCaller", "gate_callers", "required_checks"]
