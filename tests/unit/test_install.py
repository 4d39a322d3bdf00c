"""What the documented install gives a user: each gate's extra holds what the gate needs, every package
of every extra is pinned in the lock, a missing extra or an unusable tracking URI is one message and
a hint (never a traceback), and the documented local store works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from mlgate import cli, extras
from mlgate.errors import InputError, ToolError
from mlgate.mlflowio import store_error
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
# The dev extra is for this repository's own tests; the lock pins the setup action's venv.
ACTION_EXTRAS = sorted(set(EXTRAS) - {"dev"})
TRAIN_CONFIG = """version: 1
project: stub
train:
  command: {python} train_stub.py
  profiles: {{quick: {{}}}}
  device: cpu
  metrics: [holdout_auc]
data:
  sources: {{holdout: {{path: holdout.csv}}}}
model_tests:
  holdout: holdout
  label: y
  performance: {{metrics: {{roc_auc: 0.4}}}}
"""
TRAIN_SCRIPT = """
import mlflow

class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0.5] * len(model_input)

with mlflow.start_run():
    mlflow.log_metric("holdout_auc", 0.5)
    mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"])
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlgate.yaml").write_text(TRAIN_CONFIG.format(python=sys.executable))
    (root / "train_stub.py").write_text(TRAIN_SCRIPT)
    (root / "holdout.csv").write_text("x,y\n" + "".join(f"{i / 10},{i % 2}\n" for i in range(10)))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def run_mlgate(
    args: list[str], cwd: Path, blocked: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mlgate ARGS` in a fresh interpreter where importing each of `blocked` fails, as if not installed."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from mlgate.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def assert_reported(done: subprocess.CompletedProcess[str], code: int, *texts: str) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert re.search(r"^hint: ", output, re.MULTILINE), output[-3000:]
    for text in texts:
        assert text in output, output[-3000:]
    return output


# --- a gate whose extra is missing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "blocked", "extra"),
    [
        (["train", "--tracking-uri", "sqlite:///mlflow.db"], "mlflow", "train"),
        (["validate-data"], "pandas", "data"),
        (
            ["test-model", "--model", "models:/m-1", "--tracking-uri", "sqlite:///mlflow.db", "--no-comment"],
            "pytest",
            "test-model",
        ),
    ],
)
def test_missing_extra_names_the_pip_install_that_fixes_it(
    project: Path, command: list[str], blocked: str, extra: str
) -> None:
    done = run_mlgate(command, project, blocked=(blocked,))
    assert_reported(
        done, 4, f"mlgate {command[0]} needs the Python package {blocked!r}", f"pip install 'mlgate[{extra}]'"
    )


def test_missing_dvc_names_the_extra_of_the_gate_that_pulls(project: Path) -> None:
    # Without a `dvc` on PATH mlgate runs `python -m dvc`, whose failure would only say "No module named dvc".
    config = project / "mlgate.yaml"
    config.write_text(config.read_text().replace("data:\n", "data:\n  dvc: true\n"))
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    done = run_mlgate(["train", "--tracking-uri", "sqlite:///mlflow.db"], project, blocked=("dvc",), env=env)
    assert_reported(done, 4, "mlgate train needs the Python package 'dvc'", "pip install 'mlgate[train]'")


def test_sqlite_without_mlflows_sql_store_names_the_train_extra(project: Path) -> None:
    # What mlflow-skinny alone gives: MLflow registers the SQL stores only where sqlalchemy is installed.
    done = run_mlgate(["train", "--tracking-uri", "sqlite:///mlflow.db"], project, blocked=("sqlalchemy",))
    assert_reported(done, 4, "sqlite:///mlflow.db needs MLflow's SQL store", "pip install 'mlgate[train]'")


def test_a_module_that_is_no_optional_dependency_stays_a_bug() -> None:
    # A typo in mlgate's own imports must not be disguised as a missing extra.
    typo = ModuleNotFoundError("No module named 'mlgate.nope'", name="mlgate.nope")
    assert extras.missing_dependency("train", typo) is None
    assert extras.extra_for("lint", "pandas") == "data"  # not lint's: installing lint would not fix it


# --- a tracking URI MLflow cannot open ---------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["train"], ["test-model", "--model", "models:/m-1", "--no-comment"]],
)
def test_unsupported_tracking_uri_is_a_bad_input_named_without_credentials(
    project: Path, command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    code = cli.main([*command, "--tracking-uri", "foo://ci-bot:s3cr3t@tracking.example.com/x"])
    out = capsys.readouterr()
    assert code == 3, out
    text = out.out + out.err
    assert "MLflow has no store for the tracking URI foo://***@tracking.example.com/x" in text
    assert "the scheme 'foo'" in text
    assert "sqlite:///mlflow.db" in text  # the hint names the forms that work
    assert "s3cr3t" not in text
    assert not list(project.glob("*.db"))


def test_a_file_that_is_no_database_is_named_as_the_store_that_failed(project: Path) -> None:
    (project / "notes.db").write_text("not a database\n")
    done = run_mlgate(["train", "--tracking-uri", "sqlite:///notes.db"], project)
    assert_reported(done, 4, "cannot open the MLflow store at sqlite:///notes.db", "file is not a database")


def test_project_venv_without_the_sql_store_gets_its_own_hint() -> None:
    # In the project venv (test-model's models), the fix is the project's install, not an mlgate extra.
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    exc = UnsupportedModelRegistryStoreURIException("sqlite:///m.db", ["http", "https"])
    error = store_error(exc, "sqlite:///m.db", sql_hint="install mlflow in the project venv")
    assert isinstance(error, ToolError)
    assert error.hint == "install mlflow in the project venv"
    bad_scheme = store_error(UnsupportedModelRegistryStoreURIException("foo://h", ["http"]), "foo://h")
    assert isinstance(bad_scheme, InputError)


# --- the documented local store ----------------------------------------------------------------------


def test_readme_local_flow_trains_and_tests_on_a_sqlite_store(project: Path) -> None:
    """`mlgate train --tracking-uri sqlite:///mlflow.db`, then `mlgate test-model` on its model, as in the README."""
    mlgate = Path(sys.executable).parent / "mlgate"
    outputs = project / "outputs.txt"
    env = {**os.environ, "GITHUB_OUTPUT": str(outputs)}
    env.pop("MLFLOW_TRACKING_URI", None)
    trained = subprocess.run(
        [str(mlgate), "train", "--tracking-uri", "sqlite:///mlflow.db"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    assert (project / "mlflow.db").is_file()
    lines = outputs.read_text().splitlines()
    model_uri = next(lines[i + 1] for i, line in enumerate(lines) if line.startswith("model-uri<<"))
    assert model_uri.startswith("models:/m-")
    tested = subprocess.run(
        [str(mlgate), "test-model", "--model", model_uri, "--tracking-uri", "sqlite:///mlflow.db", "--no-comment"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert tested.returncode == 0, (tested.stdout + tested.stderr)[-3000:]
    assert "mlgate test-model: passed" in tested.stdout


# --- extras, lock, actions and README agree ----------------------------------------------------------


def _expand(extra: str) -> list[Requirement]:
    """The requirements of an extra, with mlgate's own extras it names (`mlgate[train]`) expanded."""
    found: list[Requirement] = []
    for line in EXTRAS[extra]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == "mlgate":
            for inner in sorted(requirement.extras):
                assert inner in EXTRAS, f"extra {extra!r} names mlgate[{inner}], which pyproject.toml does not define"
                found += _expand(inner)
        else:
            found.append(requirement)
    return found


def _closure(requirements: list[Requirement]) -> dict[str, str]:
    """Every distribution the requirements install (name -> installed version), read from this venv."""
    seen: dict[str, str] = {}
    todo = [(requirement, frozenset(requirement.extras)) for requirement in requirements]
    while todo:
        requirement, wanted = todo.pop()
        name = canonicalize_name(requirement.name)
        dist = metadata.distribution(requirement.name)
        fresh = name not in seen
        seen[name] = dist.version
        for line in dist.requires or []:
            inner = Requirement(line)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if inner.marker is None or any(inner.marker.evaluate(env) for env in environments):
                if fresh or inner.marker is not None:
                    todo.append((inner, frozenset(inner.extras)))
    return seen


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "setup" / "requirements.lock").read_text(encoding="utf-8").splitlines():
        pinned = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)", line)  # continuation lines: hashes
        if pinned:
            pins[canonicalize_name(pinned.group(1))] = pinned.group(2)
    return pins


def _extras_lists() -> dict[str, set[str]]:
    """setup/requirements.extras: the lock's packages the root action installs for each extra."""
    lists: dict[str, set[str]] = {}
    for line in (ROOT / "setup" / "requirements.extras").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            extra, _, names = line.partition(":")
            lists[extra.strip()] = {canonicalize_name(name) for name in names.split()}
    return lists


@pytest.mark.parametrize("extra", ACTION_EXTRAS)
def test_every_package_of_an_extra_is_pinned_in_the_lock(extra: str) -> None:
    pins = _lock()
    direct = _expand(extra)
    for requirement in direct:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} (extra {extra}) is not pinned in setup/requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, outside {requirement} of extra {extra}"
        )
    missing = sorted(f"{name}=={version}" for name, version in _closure(direct).items() if name not in pins)
    assert not missing, f"extra {extra} installs packages the lock does not pin: {missing}"
    # What the root action installs for this extra, by hash: its whole closure (and nothing unpinned).
    listed = _extras_lists()[extra]
    unlisted = sorted(name for name in _closure(direct) if name not in listed)
    assert not unlisted, f"setup/requirements.extras lacks what extra {extra} installs: {unlisted}; run `make lock`"
    assert listed <= set(pins), f"setup/requirements.extras names unpinned packages: {sorted(listed - set(pins))}"


def test_every_pin_of_the_lock_carries_the_hashes_of_its_files() -> None:
    # pip takes no hashes from a constraints file: the root action installs the lock's entries as requirements
    # under --require-hashes (setup/lockfile.py), so each must carry its hashes.
    text = (ROOT / "setup" / "requirements.lock").read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
    unhashed = [entry.split()[0] for entry in entries if "==" in entry and "--hash=sha256:" not in entry]
    assert not unhashed, f"lock entries without hashes: {unhashed}"
    assert "torch" not in _lock()  # the dev extra's local CPU wheel: installed by version, outside hash checking


def test_all_installs_every_gate() -> None:
    named = {extra for line in EXTRAS["all"] for extra in Requirement(line).extras}
    assert named == set(ACTION_EXTRAS) - {"all"}
    assert set(extras.EXTRA_OF_COMMAND.values()) <= set(EXTRAS)
    assert set(extras.MODULES_OF_EXTRA) <= set(EXTRAS)


@pytest.mark.parametrize("extra", sorted(extras.MODULES_OF_EXTRA))
def test_the_modules_mapped_to_an_extra_are_what_it_installs(extra: str) -> None:
    installed = set(_closure(_expand(extra)))
    providers = metadata.packages_distributions()
    for module in extras.MODULES_OF_EXTRA[extra]:
        dists = {canonicalize_name(name) for name in providers.get(module, [])}
        assert dists & installed, f"module {module} (mapped to extra {extra}) comes from none of its packages"


# The model gates share one mlgate venv (one build per runner, one cache key): each installs this extra, which
# holds its own gate's.
MODEL_GATES_EXTRA = {"train": "compress", "test-model": "compress", "compress": "compress"}


def test_each_action_installs_the_extra_of_its_gate() -> None:
    for action in sorted((ROOT / "actions").glob("*/action.yml")):
        steps = yaml.safe_load(action.read_text(encoding="utf-8"))["runs"]["steps"]
        setup = next((step for step in steps if str(step.get("uses", "")).startswith("mlgate/mlgate@")), None)
        command = next(step["run"].split()[1] for step in steps if str(step.get("run", "")).startswith("mlgate "))
        if setup is None:  # a helper run after the caller's set-up (actions/project-env): its command needs no extra
            assert command not in extras.EXTRA_OF_COMMAND, f"{action} runs `mlgate {command}` without its extra"
            continue
        gate_extra = extras.EXTRA_OF_COMMAND[command]
        assert setup["with"]["extras"] == MODEL_GATES_EXTRA.get(action.parent.name, gate_extra), action


@pytest.mark.parametrize("gate", sorted(MODEL_GATES_EXTRA))
def test_the_shared_model_gates_extra_holds_each_gates_own(gate: str) -> None:
    shared = set(_closure(_expand(MODEL_GATES_EXTRA[gate])))
    own = set(_closure(_expand(extras.EXTRA_OF_COMMAND[gate])))
    assert own <= shared, f"the {MODEL_GATES_EXTRA[gate]} extra lacks what {gate} needs: {sorted(own - shared)}"


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_local_install_covers_every_command_it_shows() -> None:
    block = _section((ROOT / "docs" / "local-runs.md").read_text(encoding="utf-8"), "The same gates locally")
    install = re.search(r"pip install 'mlgate\[([a-z,-]+)\]", block)
    assert install, "the section shows no pip install of mlgate"
    installed = {canonicalize_name(r.name) for extra in install.group(1).split(",") for r in _expand(extra)}
    given = {extra for extra in install.group(1).split(",")}
    given |= {inner for extra in list(given) for line in EXTRAS[extra] for inner in Requirement(line).extras}
    commands = re.findall(r"^mlgate ([a-z-]+)", block, re.MULTILINE)
    assert {"lint", "validate-data", "train", "test-model"} <= set(commands)
    for command in commands:
        needed = extras.EXTRA_OF_COMMAND.get(command)
        assert needed is None or needed in given, f"`mlgate {command}` needs mlgate[{needed}]"
    if re.search(r"^(\S+=\S+ )*pytest ", block, re.MULTILINE):
        assert "pytest" in installed


def test_nothing_a_user_reads_points_outside_the_repository() -> None:
    outside = "../" + "shared"  # spelled in two parts, so this file does not match itself
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    offenders = []
    for name in listed:
        path = ROOT / name
        if path.is_file() and path.suffix not in {".png", ".whl", ".gz", ".db"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            offenders += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if outside in line]
    assert not offenders, f"references to {outside}: {offenders}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
    assert "](docs/architecture.md)" in readme
