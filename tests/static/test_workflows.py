"""Static checks of mlgate's workflows and actions: linters, security audit, schemas and conventions.

Files are discovered when the tests are collected, so a workflow or action added later is checked
without touching this file. Each convention check is a function returning the problems it found
(empty when the file is fine), and each test asserts on that list, so a failure names the file,
the place in it and what to change.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlgate
import pytest
import yaml
from mlgate.localci.pins import PINS, PINS_BY_REPOSITORY, STANDINS_DIR, local_repository_args

pytestmark = pytest.mark.static

REPO_ROOT = Path(__file__).resolve().parents[2]

# zizmor's policy for this repository; a .github/zizmor.yml, if the repository gets one, wins.
ZIZMOR_CONFIG_CANDIDATES = (REPO_ROOT / ".github" / "zizmor.yml", Path(__file__).with_name("zizmor.yml"))


# --------------------------------------------------------------------------- discovery


def _glob(*patterns: str, root: Path = REPO_ROOT) -> list[Path]:
    found = {path for pattern in patterns for path in root.glob(pattern) if path.is_file()}
    return sorted(found)


def workflow_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every workflow: this repository's, the example projects' and the caller templates."""
    return _glob(
        ".github/workflows/*.yml",
        ".github/workflows/*.yaml",
        "example-*/.github/workflows/*.yml",
        "example-*/.github/workflows/*.yaml",
        "workflows/*.yml",
        "workflows/*.yaml",
        root=root,
    )


def action_files(root: Path = REPO_ROOT) -> list[Path]:
    """mlgate's own actions: the root setup action and one composite action per gate."""
    return _glob("action.yml", "action.yaml", "actions/*/action.yml", "actions/*/action.yaml", root=root)


def standin_files(root: Path = REPO_ROOT) -> list[Path]:
    """The offline stand-ins for GitHub-hosted actions that `mlgate ci` serves (package data of mlgate.localci)."""
    return _glob("scripts/mlgate/localci/standins/**/action.yml", root=root)


def self_referencing_files(root: Path = REPO_ROOT) -> list[Path]:
    """Files whose `uses: mlgate/mlgate...@REF` must name the release being built."""
    return _glob(
        ".github/workflows/ml-*.yml",
        "action.yml",
        "actions/*/action.yml",
        "workflows/*.yml",
        "example-*/.github/workflows/*.yml",
        root=root,
    )


WORKFLOWS = workflow_files()
ACTIONS = action_files()
STANDINS = standin_files()
SELF_REFERENCING = self_referencing_files()


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _params(paths: Iterable[Path]) -> list[Any]:
    return [pytest.param(path, id=_rel(path)) for path in paths]


# --------------------------------------------------------------------------- reading files


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise AssertionError(f"{_rel(path)}: not a YAML mapping")
    return document


def is_workflow(document: dict[str, Any]) -> bool:
    return "jobs" in document


def workflow_triggers(document: dict[str, Any]) -> dict[str, Any]:
    """The `on:` block as a mapping (YAML 1.1 reads the key `on` as True)."""
    raw: dict[Any, Any] = document
    triggers = raw.get("on", raw.get(True, {}))
    if isinstance(triggers, str):
        return {triggers: None}
    if isinstance(triggers, list):
        return dict.fromkeys(triggers)
    return dict(triggers or {})


def iter_steps(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`where`, step) for every step of a workflow's jobs or of a composite action."""
    if is_workflow(document):
        for job_id, job in (document.get("jobs") or {}).items():
            for index, step in enumerate((job or {}).get("steps") or []):
                yield f"jobs.{job_id}.steps[{index}]{_step_label(step)}", step
    else:
        runs = document.get("runs") or {}
        for index, step in enumerate(runs.get("steps") or []):
            yield f"runs.steps[{index}]{_step_label(step)}", step


def _step_label(step: dict[str, Any]) -> str:
    label = step.get("name") or step.get("id") or step.get("uses")
    return f" ({label})" if label else ""


def uses_values(document: dict[str, Any]) -> list[str]:
    """Every `uses:` of steps and of jobs calling reusable workflows."""
    values = [str(step["uses"]) for _, step in iter_steps(document) if "uses" in step]
    if is_workflow(document):
        values += [str(job["uses"]) for job in (document.get("jobs") or {}).values() if job and "uses" in job]
    return values


USES_LINE = re.compile(r"""^\s*(?:-\s+)?uses:\s*["']?(?P<ref>[^\s"'#]+)["']?\s*(?:#\s*(?P<comment>.*?))?\s*$""")


@dataclass(frozen=True)
class UsesLine:
    ref: str  # as written: owner/name[/path]@version, ./path or docker://image
    comment: str  # text after `#` on the same line, "" if none
    line: int

    @property
    def target(self) -> str:
        return self.ref.rpartition("@")[0] if "@" in self.ref else self.ref

    @property
    def version(self) -> str:
        return self.ref.rpartition("@")[2] if "@" in self.ref else ""

    @property
    def repository(self) -> str:
        """owner/name of a remote reference (without the sub-path)."""
        return "/".join(self.target.split("/")[:2])

    @property
    def is_local(self) -> bool:
        return self.ref.startswith("./") or self.ref.startswith("docker://")

    @property
    def is_self(self) -> bool:
        return self.repository == mlgate.REPOSITORY

    @property
    def is_third_party(self) -> bool:
        return not self.is_local and not self.is_self


def uses_lines(path: Path) -> list[UsesLine]:
    """`uses:` lines with their trailing comment (which YAML parsers drop).

    Cross-checked against the parsed YAML so that a `uses:` written in a form the pattern does not
    read (flow mapping, odd quoting) fails loudly instead of escaping every check below.
    """
    found = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = USES_LINE.match(text)
        if match:
            found.append(UsesLine(match["ref"], match["comment"] or "", number))
    parsed = sorted(uses_values(load_yaml(path)))
    read = sorted(item.ref for item in found)
    if parsed != read:
        raise AssertionError(
            f"{_rel(path)}: the `uses:` lines read as text {read} differ from the YAML's {parsed}; "
            "write each `uses:` on its own line as `uses: owner/name@ref # comment`"
        )
    return found


# --------------------------------------------------------------------------- running tools


def tool(name: str) -> str:
    """The executable of a dev tool, preferring the one next to this interpreter (the venv)."""
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed; install the dev extra: pip install -e '.[dev]'")
    return found


def run_tool(command: list[str], cwd: Path = REPO_ROOT, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def assert_tool_passes(command: list[str], cwd: Path = REPO_ROOT) -> None:
    """Run a linter; on a non-zero exit fail with its own output (and without a Python traceback)."""
    done = run_tool(command, cwd=cwd)
    if done.returncode != 0:
        shown = " ".join(_rel(Path(part)) if part.startswith(str(REPO_ROOT)) else part for part in command)
        pytest.fail(f"`{shown}` exited {done.returncode}:\n{done.stdout}{done.stderr}", pytrace=False)


# --------------------------------------------------------------------------- linters and audits


@pytest.mark.parametrize("path", _params(WORKFLOWS))
def test_actionlint(path: Path) -> None:
    # A remote reusable workflow (`mlgate/mlgate/.github/workflows/ml-ci.yml@v1` in the example
    # project and the templates) is checked for syntax only: actionlint never fetches it, so it
    # needs no configuration. What actionlint cannot check there (the `with:` keys against the
    # workflow's inputs) test_self_reference_arguments checks against the local file.
    command = [tool("actionlint"), "-no-color", str(path)]
    assert_tool_passes(command, cwd=path.parent)


def zizmor_config() -> Path:
    return next(path for path in ZIZMOR_CONFIG_CANDIDATES if path.is_file())


def zizmor_command(path: Path, *extra: str) -> list[str]:
    # The pedantic persona (every finding, code smells included), offline audits only. The config allows
    # mlgate's own `@v1` self-references (see .github/zizmor.yml for why); everything else must be
    # hash-pinned. A finding that is no issue here is ignored on its line, with the reason beside it.
    config = ["--config", str(zizmor_config())]
    return [tool("zizmor"), "--persona", "pedantic", "--offline", "--no-progress", *config, *extra, str(path)]


@pytest.mark.parametrize("path", _params(WORKFLOWS + ACTIONS))
def test_zizmor(path: Path) -> None:
    assert_tool_passes(zizmor_command(path))


def _check_schema(schema: str, paths: list[Path]) -> None:
    if not paths:
        pytest.skip("no files to check")
    command = [tool("check-jsonschema"), "--builtin-schema", schema, *(str(path) for path in paths)]
    assert_tool_passes(command)


def test_workflows_match_schema() -> None:
    _check_schema("vendor.github-workflows", WORKFLOWS)


def test_actions_match_schema() -> None:
    _check_schema("vendor.github-actions", ACTIONS + STANDINS)


def test_ruff_check() -> None:
    command = [
        sys.executable,
        "-m",
        "ruff",
        "check",
        "--no-cache",
        "--output-format=concise",
        "scripts",
        "tests",
        "tools",
    ]
    assert_tool_passes(command)


def test_ruff_format() -> None:
    command = [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "scripts", "tests", "tools"]
    assert_tool_passes(command)


def test_mypy_strict() -> None:
    # The [tool.mypy] table of pyproject.toml: strict, packages = ["mlgate"], mypy_path = "scripts".
    command = [sys.executable, "-m", "mypy"]
    assert_tool_passes(command)


def test_mypy_strict_tools() -> None:
    # The maintainer tools (tools/release.py) are no part of the package the config names.
    command = [sys.executable, "-m", "mypy", "--strict", "tools"]
    assert_tool_passes(command)


# --------------------------------------------------------------------------- conventions


def unpinned_uses(path: Path) -> list[str]:
    """Third-party `uses:` not pinned to the sha and `# vX.Y.Z` comment of the pin table."""
    problems = []
    for item in uses_lines(path):
        if item.ref.startswith("docker://") and "@sha256:" not in item.ref:
            problems.append(f"{_rel(path)}:{item.line}: `{item.ref}`: pin the image by digest (`@sha256:...`)")
        if not item.is_third_party:
            continue
        where = f"{_rel(path)}:{item.line}: `{item.ref}`"
        pin = PINS_BY_REPOSITORY.get(item.repository)
        if pin is None:
            known = ", ".join(sorted(PINS_BY_REPOSITORY))
            problems.append(f"{where}: {item.repository} is not in the pin table (known: {known})")
            continue
        expected = f"uses: {item.target}@{pin.sha} # {pin.version}"
        if not re.fullmatch(r"[0-9a-f]{40}", item.version):
            problems.append(f"{where}: not pinned to a 40-hex commit sha; write `{expected}`")
        elif item.version != pin.sha:
            problems.append(f"{where}: sha differs from the pinned {pin.version}; write `{expected}`")
        elif item.comment != pin.version:
            problems.append(f"{where}: comment is `# {item.comment}`, the pin is {pin.version}; write `{expected}`")
    return problems


@pytest.mark.parametrize("path", _params(WORKFLOWS + ACTIONS + STANDINS))
def test_third_party_uses_are_pinned(path: Path) -> None:
    problems = unpinned_uses(path)
    assert not problems, "\n".join(problems)


def test_every_third_party_action_has_a_standin() -> None:
    """Each third-party `uses:` in the repository is served offline by local_repository_args."""
    args = local_repository_args()
    mapped: dict[str, Path] = {}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        assert flag == "--local-repository"
        name, _, folder = value.partition("=")
        mapped[name] = Path(folder)
        assert Path(folder).is_absolute(), f"{value}: act needs an absolute directory"
    assert set(mapped) == {f"{pin.repository}@{pin.sha}" for pin in PINS}
    # What the package serves is what this checkout's static checks read (not another install's copy).
    assert STANDINS_DIR == (REPO_ROOT / "scripts" / "mlgate" / "localci" / "standins").resolve()

    problems = []
    for path in WORKFLOWS + ACTIONS:
        for item in uses_lines(path):
            if not item.is_third_party:
                continue
            directory = mapped.get(f"{item.repository}@{item.version}")
            if directory is None:
                problems.append(f"{_rel(path)}:{item.line}: `{item.ref}` has no --local-repository stand-in")
                continue
            sub_path = item.target[len(item.repository) :].strip("/")
            standin = directory / sub_path / "action.yml"
            if not standin.is_file():
                problems.append(f"{_rel(path)}:{item.line}: `{item.ref}` needs the stand-in {_rel(standin)}")
    assert not problems, "\n".join(problems)


def top_level_permissions(path: Path) -> list[str]:
    document = load_yaml(path)
    if "permissions" not in document:
        return [f"{_rel(path)}: no top-level `permissions: {{}}`; add it and grant each job what it needs"]
    if document["permissions"] != {}:
        return [
            f"{_rel(path)}: top-level permissions are {document['permissions']!r}; "
            "write `permissions: {}` and move the grants to the jobs, with a comment why"
        ]
    return []


@pytest.mark.parametrize("path", _params(WORKFLOWS))
def test_top_level_permissions_are_empty(path: Path) -> None:
    problems = top_level_permissions(path)
    assert not problems, "\n".join(problems)


def expressions_in_run(path: Path) -> list[str]:
    problems = []
    for where, step in iter_steps(load_yaml(path)):
        script = step.get("run")
        if isinstance(script, str) and "${{" in script:
            expressions = sorted(set(re.findall(r"\$\{\{.*?\}\}", script, flags=re.DOTALL)))
            problems.append(
                f"{_rel(path)}: {where}: `run:` contains {', '.join(expressions)}; "
                "pass the value through the step's `env:` and use the variable in the script"
            )
    return problems


@pytest.mark.parametrize("path", _params(WORKFLOWS + ACTIONS + STANDINS))
def test_no_expressions_in_run(path: Path) -> None:
    problems = expressions_in_run(path)
    assert not problems, "\n".join(problems)


def inherited_secrets(path: Path) -> list[str]:
    document = load_yaml(path)
    return [
        f"{_rel(path)}: jobs.{job_id}: `secrets: inherit`; pass each secret the called workflow declares"
        for job_id, job in (document.get("jobs") or {}).items()
        if job and job.get("secrets") == "inherit"
    ]


@pytest.mark.parametrize("path", _params(WORKFLOWS))
def test_no_secrets_inherit(path: Path) -> None:
    problems = inherited_secrets(path)
    assert not problems, "\n".join(problems)


def persisted_credentials(path: Path) -> list[str]:
    problems = []
    for where, step in iter_steps(load_yaml(path)):
        if not str(step.get("uses", "")).startswith("actions/checkout@"):
            continue
        setting = (step.get("with") or {}).get("persist-credentials")
        if setting is not False and str(setting).lower() != "false":
            problems.append(f"{_rel(path)}: {where}: add `with: persist-credentials: false` to the checkout")
    return problems


@pytest.mark.parametrize("path", _params(WORKFLOWS + ACTIONS))
def test_checkout_does_not_persist_credentials(path: Path) -> None:
    problems = persisted_credentials(path)
    assert not problems, "\n".join(problems)


def undescribed_interface(path: Path) -> list[str]:
    """Inputs and outputs (and secrets of a reusable workflow) without a description."""
    document = load_yaml(path)
    if is_workflow(document):
        call = workflow_triggers(document).get("workflow_call") or {}
        sections = {f"on.workflow_call.{key}": call.get(key) for key in ("inputs", "outputs", "secrets")}
    else:
        sections = {"inputs": document.get("inputs"), "outputs": document.get("outputs")}
    problems = []
    for section, entries in sections.items():
        for name, spec in (entries or {}).items():
            description = (spec or {}).get("description")
            if not isinstance(description, str) or not description.strip():
                problems.append(f"{_rel(path)}: {section}.{name} has no description")
    return problems


@pytest.mark.parametrize("path", _params(ACTIONS + STANDINS + WORKFLOWS))
def test_inputs_and_outputs_are_described(path: Path) -> None:
    problems = undescribed_interface(path)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- policy


def privileged_triggers(path: Path) -> list[str]:
    if "pull_request_target" not in workflow_triggers(load_yaml(path)):
        return []
    return [
        f"{_rel(path)}: triggers on `pull_request_target`, which runs with the base repository's token and "
        "secrets on code a fork controls; use `pull_request`"
    ]


@pytest.mark.parametrize("path", _params(WORKFLOWS))
def test_no_pull_request_target(path: Path) -> None:
    problems = privileged_triggers(path)
    assert not problems, "\n".join(problems)


def _node(mapping: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    return next((value for name, value in mapping.value if getattr(name, "value", None) == key), None)


def uncommented_permissions(path: Path) -> list[str]:
    """Job-level grants without a `# why` on their line (YAML parsers drop comments: read the nodes' lines).

    The comment is the convention's evidence that a permission is used: a write grant nobody can
    explain is the one to remove.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    jobs = _node(yaml.compose(text), "jobs")
    problems = []
    for job_name, job in jobs.value if isinstance(jobs, yaml.MappingNode) else []:
        grants = _node(job, "permissions")
        where = f"{_rel(path)}:{getattr(grants, 'start_mark', job.start_mark).line + 1}: jobs.{job_name.value}"
        if isinstance(grants, yaml.ScalarNode):
            if grants.value not in ("", "{}"):
                problems.append(f"{where}: `permissions: {grants.value}`; grant each scope the job uses, with why")
            continue
        for scope, level in grants.value if isinstance(grants, yaml.MappingNode) else []:
            line = level.end_mark.line
            rest = lines[line][level.end_mark.column :] if level.end_mark.line == level.start_mark.line else ""
            if not re.match(r"\s+#\s*\S", rest):
                kind = "a write permission nothing explains is one to remove" if level.value == "write" else "say why"
                problems.append(
                    f"{_rel(path)}:{line + 1}: jobs.{job_name.value}.permissions.{scope.value}: {level.value} "
                    f"without a comment ({kind}): write `{scope.value}: {level.value} # <what the job does with it>`"
                )
    return problems


@pytest.mark.parametrize("path", _params(WORKFLOWS))
def test_every_permission_says_why(path: Path) -> None:
    problems = uncommented_permissions(path)
    assert not problems, "\n".join(problems)


def _cancels(concurrency: Any) -> bool:
    """Whether a `concurrency:` setting may cancel a run in progress (absent or false: it never does)."""
    if not isinstance(concurrency, dict):
        return False  # a bare group name: cancel-in-progress defaults to false
    setting = concurrency.get("cancel-in-progress", False)
    return setting is not False and str(setting).strip().lower() != "false"


def unguarded_environments(path: Path) -> list[str]:
    """Jobs with an `environment:` (a deploy behind approvals) that could run twice at once or be cancelled."""
    document = load_yaml(path)
    run_level = document.get("concurrency")
    problems = []
    for job_id, job in (document.get("jobs") or {}).items():
        if not job or "environment" not in job:
            continue
        where = f"{_rel(path)}: jobs.{job_id} (environment {job['environment']!r})"
        job_level = job.get("concurrency")
        if job_level is None and run_level is None:
            problems.append(
                f"{where}: no `concurrency` group; give the job (or the workflow) one, e.g. per model, "
                "with `cancel-in-progress: false`"
            )
        for level, setting in (("job", job_level), ("workflow", run_level)):
            if _cancels(setting):
                problems.append(
                    f"{where}: the {level}'s concurrency has `cancel-in-progress: {setting['cancel-in-progress']}`; "
                    "a deploy cancelled halfway leaves production half-changed: set it to false (or leave it out)"
                )
    return problems


@pytest.mark.parametrize("path", _params(WORKFLOWS))
def test_environment_jobs_never_cancel_a_deploy(path: Path) -> None:
    problems = unguarded_environments(path)
    assert not problems, "\n".join(problems)


ZIZMOR_IGNORE = re.compile(r"#\s*zizmor:\s*ignore\[(?P<rules>[^\]]*)\](?P<why>.*)$")


def zizmor_ignores(path: Path) -> list[tuple[int, str, str]]:
    """(line, rule, justification) of every inline `# zizmor: ignore[rule] why` comment."""
    found = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = ZIZMOR_IGNORE.search(text)
        if match:
            found += [(number, rule.strip(), match["why"].strip()) for rule in match["rules"].split(",")]
    return found


def unexplained_zizmor_ignores(path: Path) -> list[str]:
    """Inline ignores without a reason, or that silence nothing (zizmor re-run with --no-ignores)."""
    ignores = zizmor_ignores(path)
    if not ignores:
        return []
    done = run_tool(zizmor_command(path, "--no-ignores", "--format", "json"))
    findings = json.loads(done.stdout or "[]")
    spans = [
        (finding["ident"], location["concrete"]["location"])
        for finding in findings
        for location in finding["locations"]
    ]
    problems = []
    for line, rule, why in ignores:
        where = f"{_rel(path)}:{line}: `zizmor: ignore[{rule}]`"
        if len(why.split()) < 3:
            problems.append(f"{where} needs its reason on the same line: `# zizmor: ignore[{rule}] <why>`")
        fires = any(
            ident == rule and span["start_point"]["row"] + 1 <= line <= span["end_point"]["row"] + 1
            for ident, span in spans
        )
        if not fires:
            problems.append(f"{where} silences nothing here (zizmor reports no {rule} on that line); remove it")
    return problems


@pytest.mark.parametrize("path", _params(WORKFLOWS + ACTIONS))
def test_zizmor_ignores_are_justified(path: Path) -> None:
    problems = unexplained_zizmor_ignores(path)
    assert not problems, "\n".join(problems)


def test_zizmor_config_ignores_nothing() -> None:
    """Every exception to zizmor sits on its line with its reason; the config may tune a rule, not mute it."""
    rules = (yaml.safe_load(zizmor_config().read_text(encoding="utf-8")) or {}).get("rules") or {}
    problems = [
        f"{_rel(zizmor_config())}: rules.{name}: `{key}` mutes the rule for every file; "
        "ignore each finding inline instead (`# zizmor: ignore[rule] <why>`)"
        for name, settings in rules.items()
        for key in (settings or {})
        if key != "config"
    ]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- self-references


def self_reference_target(item: UsesLine, root: Path = REPO_ROOT) -> Path:
    """The file in this checkout that `mlgate/mlgate[/sub]@ref` stands for."""
    sub_path = item.target[len(mlgate.REPOSITORY) :].strip("/")
    if sub_path.startswith(".github/workflows/"):
        return root / sub_path
    return root / sub_path / "action.yml"


def wrong_self_references(path: Path, root: Path = REPO_ROOT, release_ref: str = mlgate.RELEASE_REF) -> list[str]:
    problems = []
    for item in uses_lines(path):
        if not item.is_self:
            continue
        where = f"{_rel(path)}:{item.line}: `{item.ref}`"
        if item.version != release_ref:
            problems.append(f"{where}: ref must be the release ref `{release_ref}` (mlgate.RELEASE_REF)")
        target = self_reference_target(item, root)
        sub_path = item.target[len(mlgate.REPOSITORY) :].strip("/")
        if not (sub_path == "" or sub_path.startswith(("actions/", ".github/workflows/"))):
            problems.append(f"{where}: points outside actions/ and .github/workflows/")
        elif not target.is_file():
            problems.append(f"{where}: {_rel(target)} does not exist in this repository")
    return problems


@pytest.mark.parametrize("path", _params(SELF_REFERENCING))
def test_self_references_name_this_release(path: Path) -> None:
    problems = wrong_self_references(path)
    assert not problems, "\n".join(problems)


def _declared(document: dict[str, Any], section: str) -> dict[str, Any]:
    if is_workflow(document):
        return dict((workflow_triggers(document).get("workflow_call") or {}).get(section) or {})
    return dict(document.get(section) or {})


def wrong_self_reference_arguments(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """`with:`/`secrets:` given to mlgate's own actions and workflows, against what they declare.

    actionlint cannot read a remote `uses:` and skips this; the target is in this checkout.
    """
    document = load_yaml(path)
    callers: list[tuple[str, dict[str, Any]]] = list(iter_steps(document))
    if is_workflow(document):
        callers += [(f"jobs.{job_id}", job) for job_id, job in (document.get("jobs") or {}).items() if job]
    problems = []
    for where, caller in callers:
        ref = str(caller.get("uses", ""))
        item = UsesLine(ref, "", 0)
        if not ref or not item.is_self:
            continue
        target = self_reference_target(item, root)
        if not target.is_file():
            continue  # reported by test_self_references_name_this_release
        declared = load_yaml(target)
        inputs = _declared(declared, "inputs")
        given = dict(caller.get("with") or {})
        for name in sorted(set(given) - set(inputs)):
            problems.append(f"{_rel(path)}: {where}: input `{name}` is not declared by {_rel(target)}")
        for name, spec in sorted(inputs.items()):
            spec = spec or {}
            if spec.get("required") and "default" not in spec and name not in given:
                problems.append(f"{_rel(path)}: {where}: required input `{name}` of {_rel(target)} is not given")
        if is_workflow(declared):
            secrets = _declared(declared, "secrets")
            passed = caller.get("secrets") or {}
            if isinstance(passed, dict):
                for name in sorted(set(passed) - set(secrets)):
                    problems.append(f"{_rel(path)}: {where}: secret `{name}` is not declared by {_rel(target)}")
                for name, spec in sorted(secrets.items()):
                    if (spec or {}).get("required") and name not in passed:
                        problems.append(
                            f"{_rel(path)}: {where}: required secret `{name}` of {_rel(target)} is not passed"
                        )
    return problems


@pytest.mark.parametrize("path", _params(SELF_REFERENCING))
def test_self_reference_arguments(path: Path) -> None:
    problems = wrong_self_reference_arguments(path)
    assert not problems, "\n".join(problems)


def test_files_were_found() -> None:
    """Guards the globs above: an empty list would make every parametrized test vanish silently."""
    assert (REPO_ROOT / "action.yml").is_file(), "the root action.yml is missing"
    assert WORKFLOWS, "no workflow found"
    for project in ("example-project", "example-sklearn"):
        assert any(f"{project}/.github/workflows/" in str(path) for path in WORKFLOWS), f"no workflow of {project}"
    assert ACTIONS, "no action found"
    assert len(STANDINS) >= len(PINS), f"expected a stand-in per pin, found {[_rel(p) for p in STANDINS]}"


@pytest.mark.parametrize(
    ("template", "example"),
    [("mlgate-pr.yml", "pr.yml"), ("mlgate-train.yml", "train.yml"), ("mlgate-release.yml", "release.yml")],
)
def test_template_is_what_the_example_project_runs(template: str, example: str) -> None:
    # The caller template users copy must be the file the end-to-end tests run, byte for byte.
    copied = (REPO_ROOT / "workflows" / template).read_text(encoding="utf-8")
    ran = (REPO_ROOT / "example-project" / ".github" / "workflows" / example).read_text(encoding="utf-8")
    assert copied == ran, f"workflows/{template} and example-project/.github/workflows/{example} differ"


def test_every_template_has_properties() -> None:
    for template in (REPO_ROOT / "workflows").glob("*.yml"):
        assert template.with_suffix(".properties.json").is_file(), f"{template.name} has no .properties.json"


@pytest.mark.parametrize("template", ["mlgate-pr.yml", "mlgate-train.yml", "mlgate-release.yml"])
def test_the_workflows_page_shows_the_real_template(template: str) -> None:
    page = (REPO_ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    text = (REPO_ROOT / "workflows" / template).read_text(encoding="utf-8")
    assert f"```yaml\n{text}```" in page, f"docs/workflows.md's copy of workflows/{template} is out of date"
