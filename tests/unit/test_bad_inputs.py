"""The pull-request half's bad-input suite: one table of broken projects, command lines and environments for
check, lint, validate-data, train, test-model, ci and github setup, each run through the real `mlgate` in a
subprocess and held to what bad_inputs.check asserts. The figures are printed at the end."""

from __future__ import annotations

import sys

import pytest
from bad_inputs import (
    ALIAS_BOMB,
    CANARY,
    DVC_YAML,
    NON_UTF8_CSV,
    PARQUET_SOURCE,
    PR_WORKFLOW,
    SQLITE,
    TM,
    TRAIN_CSV,
    Case,
    Table,
    both,
    check,
    edit,
    file_out,
    folder,
    folder_out,
    git_commit,
    nothing,
    params,
    remove,
    run_table,
    summary,
    symlink_out,
    write,
)

CASES: list[Case] = [
    # --- mlgate.yaml, for each gate that reads it ---
    Case("config-missing-check", ("check",), remove("mlgate.yaml"), 2, "config file not found"),
    Case("config-missing-lint", ("lint",), remove("mlgate.yaml"), 2, "config file not found"),
    Case("config-missing-validate", ("validate-data",), remove("mlgate.yaml"), 2, "config file not found"),
    Case("config-missing-train", ("train",), remove("mlgate.yaml"), 2, "config file not found", actions=True),
    Case("config-missing-test-model", (*TM, "--model", "models:/m-1"), remove("mlgate.yaml"), 2, "not found"),
    Case("config-not-mapping", ("check",), write("mlgate.yaml", "- a\n- b\n"), 2, "mapping"),
    Case("config-unknown-key", ("lint",), edit("project: stub", "project: stub\nbogus: 1"), 2, "bogus"),
    Case("config-bad-value", ("train",), edit("seed: 7", "seed: seven"), 2, "seed"),
    Case(
        "config-duplicate-key",
        ("validate-data",),
        edit("project: stub", "project: stub\nproject: other"),
        2,
        "duplicate",
        actions=True,
    ),
    Case("config-bad-yaml", ("check",), write("mlgate.yaml", "version: 1\nproject: [stub\n"), 2, "not valid YAML"),
    Case("config-alias-bomb", ("check",), write("mlgate.yaml", ALIAS_BOMB), 2, "alias"),
    Case("config-directory", ("train",), folder("mlgate.yaml"), 2, "mlgate.yaml"),
    Case("config-non-utf8", ("check",), write("mlgate.yaml", "project: caf\xe9\n".encode("latin-1")), 2, "UTF-8"),
    Case(
        "config-unbalanced-quote",
        ("train", "--tracking-uri", SQLITE),
        edit(f"command: {sys.executable} -c pass", 'command: "python train.py --name \'it"'),
        2,
        "does not split",
    ),
    # --- data sources: CSV and Parquet ---
    Case("csv-missing", ("validate-data",), remove("data/train.csv"), 3, "data/train.csv"),
    Case("csv-missing-check", ("check",), remove("data/train.csv"), 3, "data/train.csv"),
    Case("csv-missing-column", ("validate-data",), write("data/train.csv", "x\n0.1\n0.2\n"), 1, "y"),
    Case(
        "csv-wrong-delimiter", ("validate-data",), write("data/train.csv", TRAIN_CSV.replace(",", ";")), 3, "delimited"
    ),
    Case("csv-empty", ("validate-data",), write("data/train.csv", ""), 3, "empty", actions=True),
    Case("csv-directory", ("validate-data",), folder("data/train.csv"), 3, "is a folder"),
    Case("csv-non-utf8-header", ("check",), write("data/train.csv", NON_UTF8_CSV), 3, "cannot be read as CSV"),
    Case(
        "csv-non-utf8-header-validate",
        ("validate-data",),
        write("data/train.csv", NON_UTF8_CSV),
        3,
        "cannot be parsed as CSV",
    ),
    # --- paths that must stay in the project (symlinks followed): lint, environment, model tests ---
    Case(
        "lint-path-climbs-out",
        ("lint",),
        edit("project: stub", "project: stub\nlint: {paths: [../outside]}"),
        2,
        "lint.paths[0]",
    ),
    Case(
        "lint-path-symlink-out",
        ("check",),
        both(folder_out("src"), edit("project: stub", "project: stub\nlint: {paths: [src]}")),
        2,
        "lint.paths[0]",
    ),
    Case(
        "constraints-missing",  # a config error (2), as the key names a file that is not there; was a tool failure (4)
        ("train", "--tracking-uri", SQLITE),
        edit("project: stub", "project: stub\nenvironment: {install: [numpy], constraints: pins.txt}"),
        2,
        "environment.constraints names 'pins.txt', which does not exist",
    ),
    Case(
        "constraints-symlink-out",
        ("train", "--tracking-uri", SQLITE),
        both(
            file_out("pins.txt"),
            edit("project: stub", "project: stub\nenvironment: {install: [numpy], constraints: pins.txt}"),
        ),
        2,
        "environment.constraints",
    ),
    Case(
        "requirements-absolute",
        ("lint",),
        edit("project: stub", "project: stub\nenvironment: {install: [-r, /etc/hostname]}"),
        2,
        "environment.install[1]",
    ),
    Case(
        "editable-symlink-out",
        ("validate-data",),
        both(
            folder_out("lib"), edit("project: stub", "project: stub\nenvironment: {install: [numpy, -e, './lib[x]']}")
        ),
        2,
        "environment.install[2]",
        actions=True,
    ),
    Case(
        "file-url-out",
        ("check",),
        edit("project: stub", "project: stub\nenvironment: {install: ['pkg @ file:///tmp/pkg.whl']}"),
        2,
        "environment.install[0]",
    ),
    Case(
        "model-tests-climb-out",
        (*TM, "--model", "models:/m-1", "--tracking-uri", SQLITE),
        edit("label: y", "label: y\n  tests: [tests, ../outside]"),
        2,
        "model_tests.tests[1]",
    ),
    Case("lint-path-missing", ("lint",), edit("project: stub", "project: stub\nlint: {paths: [nope]}"), 3, "nope"),
    Case("csv-symlink-out", ("validate-data",), symlink_out("data/train.csv"), 3, "outside the project"),
    Case(
        "holdout-missing",
        (*TM, "--model", "models:/m-1", "--tracking-uri", SQLITE),
        remove("data/train.csv"),
        3,
        "train.csv",
    ),
    Case(
        "parquet-missing",
        ("validate-data",),
        edit("train: {path: data/train.csv}", PARQUET_SOURCE),
        3,
        "train.parquet",
    ),
    Case(
        "parquet-garbage",
        ("validate-data",),
        both(edit("train: {path: data/train.csv}", PARQUET_SOURCE), write("data/train.parquet", b"not parquet\n")),
        3,
        "train.parquet",
    ),
    # --- dvc.lock, for train ---
    Case(
        "dvc-lock-wrong-shape",
        ("train", "--tracking-uri", SQLITE),
        both(write("dvc.yaml", DVC_YAML), write("dvc.lock", "- stages\n")),
        3,
        "dvc.lock",
    ),
    # --- the model ---
    Case(
        "model-not-found",
        (*TM, "--model", "models:/m-doesnotexist", "--tracking-uri", SQLITE),
        nothing,
        3,
        "m-doesnotexist",
    ),
    # --- command lines ---
    Case("unknown-option", ("schema", "--bogus"), nothing, 3, "--bogus"),
    Case("unknown-command", ("deploy",), nothing, 3, "deploy"),
    Case("bad-choice", ("train", "--device", "quantum"), nothing, 3, "quantum", actions=True),
    Case("bad-int", ("ci", "--pr-number", "one"), nothing, 3, "one"),
    # --- the environment ---
    Case("bad-attempts", ("train",), nothing, 3, "MLGATE_MLFLOW_ATTEMPTS", env={"MLGATE_MLFLOW_ATTEMPTS": "many"}),
    Case("uri-scheme-train", ("train", "--tracking-uri", "foo://x"), nothing, 3, "foo://x"),
    Case(
        "uri-scheme-test-model",
        (*TM, "--model", "models:/m-1", "--tracking-uri", f"foo://u:{CANARY}@x"),
        nothing,
        3,
        "foo://",
        actions=True,
    ),
    Case(
        "server-down-train",
        ("train",),
        nothing,
        4,
        "request to http://***@127.0.0.1:9",
        env={"MLGATE_MLFLOW_ATTEMPTS": "1"},
    ),
    Case(
        "server-down-test-model",
        (*TM, "--model", "models:/m-1"),
        nothing,
        4,
        "127.0.0.1:9",
        env={"MLGATE_MLFLOW_ATTEMPTS": "1"},
    ),
    # --- output paths, refused before the gate runs ---
    Case(
        "junit-xml-is-a-folder",
        (*TM, "--model", "models:/m-1", "--tracking-uri", SQLITE, "--junit-xml", "out"),
        folder("out"),
        3,
        "--junit-xml",
    ),
    Case("outputs-file-is-a-folder", ("train", "--outputs-file", "out"), folder("out"), 3, "--outputs-file"),
    Case(
        "schema-output-under-a-file",
        ("schema", "--output", "notes.txt/schema.json"),
        write("notes.txt", "x"),
        3,
        "--output",
    ),
    Case("docs-dir-is-a-file", ("validate-data", "--docs-dir", "notes.txt"), write("notes.txt", "x"), 3, "--docs-dir"),
    # --- mlgate ci ---
    Case("ci-not-a-git-repo", ("ci", "pr.yml"), nothing, 3, "git"),
    Case("ci-workflow-missing", ("ci", "nope.yml"), git_commit, 3, "nope.yml"),
    # --- mlgate github setup ---
    Case(
        "github-setup-apply-without-token",
        ("github", "setup", "--apply", "--reviewer", "someone", "--repo", "o/r"),
        write(".github/workflows/pr.yml", PR_WORKFLOW),
        3,
        "GITHUB_TOKEN",
    ),
    Case(
        "github-setup-no-pr-gate",
        ("github", "setup", "--reviewer", "someone", "--repo", "o/r"),
        nothing,
        3,
        "ml-ci.yml",
    ),
]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Table:
    return run_table(CASES, tmp_path_factory.mktemp("bad-inputs"))


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input_is_one_error_with_a_hint(case: Case, table: Table) -> None:
    check(case, table.outcomes[case.id])


def test_the_repository_is_untouched(table: Table) -> None:
    before, after = table.repo_status
    assert after == before


def test_summary(table: Table, capsys: pytest.CaptureFixture[str]) -> None:
    summary("bad inputs (pull-request half)", "bad_inputs", CASES, table, capsys)
