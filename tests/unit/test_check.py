"""`mlgate check`: every problem of mlgate.yaml and of what it names, each at its file and line, in one run."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlgate.cli import main

# Each line a test points at carries a `# <marker>` comment, so expected line numbers come from the text.
CONFIG = """version: 1
project: demo
environment:
  install: [-r, requirements.txt]  # install-r
  constraints: constraints.txt  # constraints
lint:
  paths: [src]  # lint-paths
data:
  sources:
    train: { path: train.csv }  # train-source
    test: { path: test.csv }
  validate: [train]
  expectations:
    columns:
      amount: { type: float, min: 0 }  # amount-expectation
      country: { type: str }
  drift:
    reference: train
    current: test
    features: [amount, country]  # drift-features
    exclude: [id]  # drift-exclude
  leakage:
    key: id  # leakage-key
    between: [train, test]
train:
  command: python train.py  # train-command
  profiles:  # profiles
    quick: { epochs: 1 }
    full: { epochs: 5 }
model_tests:
  holdout: test  # holdout
  label: is_fraud  # label
  tests: [tests/model]  # model-tests
  performance:
    slices:
      - column: country  # slice-column
        metrics: { roc_auc: 0.6 }
  behavioral:
    minimum_functionality:
      - name: small purchase
        set: { amount: 1.0 }  # mft-set
        expect: 0
    invariance:
      - name: country does not matter
        column: country  # inv-column
        perturb: { set: US }
"""

PR_WORKFLOW = """name: ML pull request
on: [pull_request]
jobs:
  ml-ci:
    uses: mlgate/mlgate/.github/workflows/ml-ci.yml@v1  # ci-uses
    with:
      config: mlgate.yaml
"""

TRAIN_WORKFLOW = """name: ML train
on: { push: { branches: [main] } }
jobs:
  train:
    uses: mlgate/mlgate/.github/workflows/ml-train.yml@v1  # train-uses
    with:
      profile: full  # train-profile
"""

HEADER = "id,amount,country,is_fraud\n1,2.5,US,0\n"


def line_with(text: str, marker: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if line.endswith(f"# {marker}"))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small project that passes the check: every file, column and profile mlgate.yaml names exists."""
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "tests" / "model").mkdir(parents=True)
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / "mlgate.yaml").write_text(CONFIG)
    (root / "requirements.txt").write_text("numpy\n")
    (root / "constraints.txt").write_text("numpy<3\n")
    (root / "train.py").write_text("print('trained')\n")
    (root / "train.csv").write_text(HEADER)
    (root / "test.csv").write_text(HEADER)
    (root / ".github" / "workflows" / "pr.yml").write_text(PR_WORKFLOW)
    (root / ".github" / "workflows" / "train.yml").write_text(TRAIN_WORKFLOW)
    monkeypatch.chdir(root)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("MLGATE_INPUT_CONFIG", raising=False)
    return root


def edit(root: Path, name: str, old: str, new: str) -> str:
    path = root / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    return path.read_text()


def test_good_project_is_ok(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "error" not in out and "warning" not in out
    assert (
        "mlgate check: mlgate.yaml OK: 2 source headers, 10 column names, 7 files, 2 workflow profiles checked" in out
    )


@pytest.mark.parametrize(
    ("old", "new", "marker", "message"),
    [
        ("train.csv", "data/train.csv", "train-source", "data source 'train': data/train.csv does not exist"),
        ("constraints.txt", "pins.txt", "constraints", "environment.constraints: pins.txt does not exist"),
        ("requirements.txt", "reqs.txt", "install-r", "environment.install[1] names a file that pip reads: reqs.txt"),
        ("[src]", "[src, scripts]", "lint-paths", "lint.paths[1]: scripts does not exist"),
        ("tests/model", "tests/models", "model-tests", "model_tests.tests[0]: tests/models does not exist"),
        ("python train.py", "python src/train.py", "train-command", "train.command runs: src/train.py does not exist"),
        ("amount: { type: float, min: 0 }", "amnt: { type: float, min: 0 }", "amount-expectation",
         "data.expectations.columns: column 'amnt' is not in source 'train' "
         "(train.csv has id, amount, country, is_fraud)"),
        ("features: [amount, country]", "features: [amount, cuntry]", "drift-features",
         "data.drift.features[1]: column 'cuntry' is not in sources 'train', 'test'"),
        ("exclude: [id]", "exclude: [ids]", "drift-exclude",
         "data.drift.exclude[0]: column 'ids' is in none of the sources 'train', 'test'"),
        ("key: id", "key: uid", "leakage-key", "data.leakage.key: column 'uid' is not in sources 'train', 'test'"),
        ("label: is_fraud", "label: fraud", "label", "model_tests.label: column 'fraud' is not in source 'test'"),
        ("- column: country", "- column: region", "slice-column",
         "model_tests.performance.slices[0].column: column 'region' is not in source 'test'"),
        ("set: { amount: 1.0 }", "set: { amount: 1.0, hour: 3 }", "mft-set",
         "model_tests.behavioral.minimum_functionality[0].set: column 'hour' is not in source 'test'"),
        ("column: country  # inv-column", "column: device  # inv-column", "inv-column",
         "model_tests.behavioral.invariance[0].column: column 'device' is not in source 'test'"),
    ],
)  # fmt: skip
def test_missing_file_or_column_is_reported_at_its_line_with_exit_3(
    project: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, marker: str, message: str
) -> None:
    text = edit(project, "mlgate.yaml", old, new)
    assert main(["check"]) == 3
    out = capsys.readouterr().out
    assert f"mlgate.yaml:{line_with(text, marker)}: error: {message}" in out
    assert out.count(": error: ") == 1, out  # this problem only; the closing count starts with `error:`
    assert "error: mlgate check: 1 error in mlgate.yaml and what it names" in out


def test_undeclared_profile_asked_by_a_workflow_is_a_config_error_at_the_workflow_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = edit(project, ".github/workflows/train.yml", "profile: full", "profile: nightly")
    assert main(["check"]) == 2
    line = line_with(text, "train-profile")
    assert (
        f".github/workflows/train.yml:{line}: error: ml-train.yml trains profile 'nightly' (input profile), "
        "which is not declared under train.profiles in mlgate.yaml (declared: full, quick)"
    ) in capsys.readouterr().out


def test_default_profile_of_ml_ci_must_be_declared_unless_training_is_off(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(project, "mlgate.yaml", "    quick: { epochs: 1 }\n", "")
    workflow = (project / ".github/workflows/pr.yml").read_text()
    assert main(["check"]) == 2
    assert (
        f".github/workflows/pr.yml:{line_with(workflow, 'ci-uses')}: error: ml-ci.yml trains profile 'quick' "
        "(the default of its train-profile input)"
    ) in capsys.readouterr().out
    edit(project, ".github/workflows/pr.yml", "config: mlgate.yaml", "config: mlgate.yaml\n      train: false")
    assert main(["check"]) == 0


def test_empty_profiles_and_an_undeclared_holdout_are_config_errors(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = edit(project, "mlgate.yaml", "    quick: { epochs: 1 }\n    full: { epochs: 5 }\n", "")
    text = edit(project, "mlgate.yaml", "profiles:  # profiles", "profiles: {}  # profiles")
    text = edit(project, "mlgate.yaml", "holdout: test", "holdout: tst")
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    assert f"mlgate.yaml:{line_with(text, 'profiles')}: error: train.profiles is empty" in out
    assert f"mlgate.yaml:{line_with(text, 'holdout')}: error: model_tests.holdout names source 'tst'" in out


def test_every_problem_is_reported_in_one_run_and_a_config_error_decides_the_exit_code(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(project, "mlgate.yaml", "label: is_fraud", "label: fraud")
    edit(project, "mlgate.yaml", "tests: [tests/model]", "tests: [tests/models]")
    text = edit(project, "mlgate.yaml", "key: id", "key: uid")
    (project / "constraints.txt").unlink()
    edit(project, ".github/workflows/train.yml", "profile: full", "profile: nightly")
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    reported = [line.split(": error: ")[0] for line in out.splitlines() if ": error: " in line]
    assert reported == [
        f"mlgate.yaml:{line_with(text, 'constraints')}",
        f"mlgate.yaml:{line_with(text, 'leakage-key')}",
        f"mlgate.yaml:{line_with(text, 'label')}",
        f"mlgate.yaml:{line_with(text, 'model-tests')}",
        f".github/workflows/train.yml:{line_with(TRAIN_WORKFLOW, 'train-profile')}",
    ]
    assert "mlgate check: 5 errors in mlgate.yaml and what it names" in out


def test_every_schema_error_is_reported_at_its_own_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(project, "mlgate.yaml", "lint:\n", "lnit:\n")
    text = edit(project, "mlgate.yaml", "country: { type: str }", "country: { type: text }  # country-type")
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    assert f"mlgate.yaml:{line_with(text, 'lint-paths') - 1}: error: invalid key lnit: Extra inputs" in out
    assert (
        f"mlgate.yaml:{line_with(text, 'country-type')}: error: invalid key data.expectations.columns.country.type"
        in out
    )


def test_a_dvc_source_not_pulled_is_a_warning(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(project, "mlgate.yaml", "data:\n", "data:\n  dvc: true\n")
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (project / "train.csv").unlink()
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert (
        f"mlgate.yaml:{line_with(text, 'train-source')}: warning: data source 'train': train.csv is not pulled: "
        "run `dvc pull`"
    ) in out
    assert "mlgate check: mlgate.yaml OK (1 warning)" in out


def test_parquet_columns_and_a_wrong_csv_delimiter(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1], "amount": [2.5], "is_fraud": [0]}), project / "test.parquet")
    text = edit(project, "mlgate.yaml", "test: { path: test.csv }", "test: { path: test.parquet }  # test-source")
    (project / "train.csv").write_text(HEADER.replace(",", ";"))
    assert main(["check"]) == 3
    out = capsys.readouterr().out
    assert (
        f"mlgate.yaml:{line_with(text, 'train-source')}: error: data source 'train': the header of train.csv "
        "is one column 'id;amount;country;is_fraud'; it looks ;-delimited"
    ) in out
    assert "model_tests.performance.slices[0].column: column 'country' is not in source 'test'" in out


def test_inside_actions_problems_are_annotations(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(project))
    text = edit(project, "mlgate.yaml", "label: is_fraud", "label: fraud")
    assert main(["check"]) == 3
    out = capsys.readouterr().out
    assert f"::error file=mlgate.yaml,line={line_with(text, 'label')},title=mlgate check::model_tests.label" in out


def test_a_workflow_that_runs_a_gate_without_its_section_is_a_config_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (project / "mlgate.yaml").read_text()
    start, end = text.index("train:\n  command"), text.index("model_tests:")
    (project / "mlgate.yaml").write_text(text[:start] + text[end:])
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    line = line_with(PR_WORKFLOW, "ci-uses")
    assert (
        f".github/workflows/pr.yml:{line}: error: ml-ci.yml runs mlgate's train step, but mlgate.yaml has no train "
        "section; add train.command and train.profiles, or pass train: false"
    ) in out
    line = line_with(TRAIN_WORKFLOW, "train-uses")
    assert f".github/workflows/train.yml:{line}: error: ml-train.yml runs mlgate's train step" in out


def test_a_dvc_stage_must_be_declared_in_dvc_yaml(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(project, "mlgate.yaml", "command: python train.py", "stage: fit")
    (project / "dvc.yaml").write_text("stages:\n  prepare: { cmd: echo }\n  train: { cmd: python train.py }\n")
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert main(["check"]) == 3
    assert (
        f"mlgate.yaml:{line_with(text, 'train-command')}: error: train.stage 'fit' is not a stage of dvc.yaml "
        "(its stages: prepare, train)"
    ) in capsys.readouterr().out


def test_a_workflow_for_another_project_of_the_repository_is_not_held_against_this_one(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(project, ".github/workflows/train.yml", "profile: full", "profile: nightly\n      working-directory: other")
    assert main(["check"]) == 0
    assert "1 workflow profile checked" in capsys.readouterr().out


@pytest.mark.parametrize("actions", [False, True], ids=["terminal", "actions"])
def test_a_path_outside_the_project_is_reported_once_at_its_line_with_its_fix(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, actions: bool
) -> None:
    if actions:
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.setenv("GITHUB_WORKSPACE", str(project))
    text = edit(project, "mlgate.yaml", "path: train.csv", "path: ../train.csv")
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    line = line_with(text, "train-source")
    where = f"::error file=mlgate.yaml,line={line},title=mlgate check::" if actions else f"mlgate.yaml:{line}: error: "
    problem = next(row for row in out.splitlines() if "data.sources.train.path" in row)
    assert problem.startswith(f"{where}invalid key data.sources.train.path: '../train.csv' is outside the project")
    assert problem.count("mlgate.yaml") == 1, problem  # the location, said once
    assert problem.endswith("data.sources.train.allow_outside_project: true to read it from there on purpose")
