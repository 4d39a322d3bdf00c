"""The model-test gate end to end: mlgate.yaml's declared checks and a project's own model tests, run by
`run_model_tests` under pytest (in this interpreter: the config has no environment.install) against small
pyfunc models in a sqlite MLflow store, with the champion read from the registry's `@champion` alias.

The data follow a known logistic relation on amount and velocity, so the "good" model (the true
coefficients) and the "blind" one (amount ignored) are told apart by AUC and by the directional check.
"""

from __future__ import annotations

import shutil
import string
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlgate.modeltest
import mlgate.modeltest.context
import modeltest_models
import numpy as np
import pandas as pd
import pytest
from mlgate import cli
from mlgate.commands.modeltest import render
from mlgate.config import BaselineChecks, DirectionalCase, InvarianceCase, LoadedConfig, Perturbation, load_config
from mlgate.errors import ConfigError, InputError
from mlgate.modeltest import ModelTestReport, run_model_tests
from mlgate.modeltest.checks import Session, _passes, declared_checks, promotion
from mlgate.modeltest.context import (
    LATENCY_ROUNDS,
    LATENCY_WARMUP_CALLS,
    latency_ms,
    perturb,
    score_vector,
    threads_note,
)

ROWS = 3000
COUNTRIES = ["US", "GB", "DE", "FR"]
REGISTERED = "toy"

# Each line a test points at carries a `# <marker>` comment, so expected line numbers come from the text.
CONFIG = string.Template(
    """\
version: 1
project: toy
data:
  sources:
    holdout: {path: holdout.csv}
    unlabelled: {path: unlabelled.csv}
    scoring: {path: scoring/2026-01.csv}  # scoring-path
  expectations:
    columns:
      amount: {type: float, min: 0, max: 100000}
      velocity: {type: int, min: 0, max: 1000}
      country: {type: str, allowed: [US, GB, DE, FR]}
model_tests:
  holdout: $holdout  # holdout
  label: label  # label
  score: $score  # score
  tests: $tests  # tests
  performance:
    metrics: {roc_auc: 0.55, pr_auc: 0.25}
    slices:
      - column: $slice_column  # slice-column
        metrics: {roc_auc: 0.5}
        min_rows: 100
    latency:
      - {batch: 100, p95_ms: 10000}
    latency_repeats: 3
  behavioral:
    minimum_functionality:
      - name: a small purchase at rest is not fraud
        where: $mft_where  # mft-where
        set: $mft_set  # mft-set
        expect: 0
    invariance:
      - name: the country does not matter
        column: $country_column  # invariance-column
        perturb: $country_perturb  # invariance-perturb
        where: $country_where  # invariance-where
        tolerance: 0.001
    directional:
      - name: a larger amount raises the risk  # amount-case
        column: amount
        perturb: $amount_perturb  # amount-perturb
        expect: increase
      - name: more transactions never lower the risk
        column: velocity
        perturb: $velocity_perturb  # velocity-perturb
        where: $velocity_where  # velocity-where
        expect: $velocity_expect
  baseline:  # baseline
    model: $baseline_model
    alias: champion
    max_regression: {roc_auc: 0.01, pr_auc: 0.02}
    promotion_metric: roc_auc
    promotion_margin: 0.01
    allow_signature_change: $allow
"""
)
DEFAULTS = {
    "holdout": "holdout",
    "score": "score",
    "mft_where": "{}",
    "country_where": "{}",
    "velocity_where": "{}",
    "velocity_expect": "not_decrease",
    "tests": "[]",
    "slice_column": "country",
    "mft_set": "{amount: 5.0, velocity: 0}",
    "country_column": "country",
    "country_perturb": "{replace: {US: GB}}",
    "amount_perturb": "{add: 500}",
    "velocity_perturb": "{add: 2, clip: true}",
    "baseline_model": REGISTERED,
    "allow": "false",
}

OWN_TESTS = """\
import numpy as np


def test_scores_are_probabilities(candidate_model, holdout, predict):
    scores = predict(candidate_model, holdout)
    assert scores.shape == (len(holdout),)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_amount_raises_the_score(candidate_model, holdout, predict, perturb):
    more = perturb(holdout, "amount", add=100.0)
    assert (predict(candidate_model, more) > predict(candidate_model, holdout)).all()


def test_agrees_with_the_champion(candidate_model, champion_model, holdout, predict):
    gap = np.abs(predict(candidate_model, holdout) - predict(champion_model, holdout))
    assert gap.mean() < 0.5
"""

FAILING_TEST = """\
def test_recall_on_large_amounts(candidate_model, holdout, predict):
    large = holdout[holdout["amount"] > 1000]
    assert (predict(candidate_model, large) >= 0.99).all(), "large amounts must always be flagged"
"""


def line_with(text: str, marker: str) -> int:
    """The 1-based line of `text` carrying `# marker`."""
    hits = [number for number, line in enumerate(text.splitlines(), 1) if line.endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


# --- data, models and the MLflow store ---------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _only_mlgate_plugin() -> Iterator[None]:
    """The pytest runs load mlgate's plugin through `-p` alone, not the dev venv's other plugins (hydra,
    anyio, ...): a project venv need not have them, and importing them costs seconds per run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 rows whose label follows the logistic relation of modeltest_models, seeded."""
    rng = np.random.default_rng(0)
    amount = np.round(rng.lognormal(5.0, 1.0, ROWS), 2)
    velocity = np.clip(rng.poisson(4, ROWS), 0, 20)
    country = rng.choice(COUNTRIES, ROWS)
    logit = modeltest_models.INTERCEPT + modeltest_models.AMOUNT * amount + modeltest_models.VELOCITY * velocity
    label = (rng.random(ROWS) < modeltest_models.sigmoid(logit)).astype(int)
    frame = pd.DataFrame(
        {"id": np.arange(ROWS), "amount": amount, "velocity": velocity, "country": country, "label": label}
    )
    root = tmp_path_factory.mktemp("data")
    frame.to_csv(root / "holdout.csv", index=False)
    frame.drop(columns=["label"]).to_csv(root / "unlabelled.csv", index=False)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[SimpleNamespace]:
    """A sqlite MLflow store holding the good, blind and narrow models, each a version of `toy`."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the registry another module left set
    experiment = client.create_experiment("toy", artifact_location=(root / "artifacts").as_uri())
    frame = pd.read_csv(data_dir / "holdout.csv").head(50)
    wide, narrow = ["amount", "velocity", "country"], ["amount", "velocity"]
    code = str(Path(modeltest_models.__file__))
    uris: dict[str, str] = {}
    versions: dict[str, str] = {}
    # Earlier tests in the same session (the e2e ones) may have set mlflow's global tracking URI,
    # which wins over the environment: set it here and put it back afterwards.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    with pytest.MonkeyPatch.context() as patch, mlflow.start_run(experiment_id=experiment):
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        client.create_registered_model(REGISTERED)
        models = {
            "good": (modeltest_models.Logistic(), wide),
            "blind": (modeltest_models.Logistic(amount_weight=0.0), wide),
            "narrow": (modeltest_models.Logistic(), narrow),  # same scores, a signature without `country`
            "columns": (modeltest_models.Logistic(output="columns"), wide),  # label, legit, fraud
            "small-batches": (modeltest_models.Logistic(output="small-batches"), wide),  # raises on the holdout
        }
        for name, (model, columns) in models.items():
            inputs = frame[columns]
            signature = infer_signature(inputs, model.predict(None, inputs))
            info = mlflow.pyfunc.log_model(
                name=name, python_model=model, signature=signature, code_paths=[code], pip_requirements=["mlflow"]
            )
            uris[name] = info.model_uri
            version = client.create_model_version(REGISTERED, info.model_uri, model_id=info.model_id)
            versions[name] = str(version.version)
        # scikit-learn's flavor with predict_proba: the pyfunc returns an array with a column per class.
        from sklearn.linear_model import LogisticRegression

        holdout = pd.read_csv(data_dir / "holdout.csv")
        proba = LogisticRegression().fit(holdout[narrow], holdout["label"])
        info = mlflow.sklearn.log_model(
            proba, name="proba", pyfunc_predict_fn="predict_proba", pip_requirements=["scikit-learn"],
            signature=infer_signature(frame[narrow], proba.predict_proba(frame[narrow])),
        )  # fmt: skip
        uris["proba"] = info.model_uri
    try:
        yield SimpleNamespace(uri=uri, client=client, models=uris, versions=versions, proba=proba)
    finally:
        mlflow.set_tracking_uri(previous)


def crown(store: SimpleNamespace, name: str | None) -> None:
    """Point `toy@champion` at the named model's version; None: no champion yet."""
    if name is None:
        from mlflow.exceptions import MlflowException

        try:
            store.client.delete_registered_model_alias(REGISTERED, "champion")
        except MlflowException:
            pass  # there was none
    else:
        store.client.set_registered_model_alias(REGISTERED, "champion", store.versions[name])


@pytest.fixture(scope="module")
def make_project(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Callable[..., Path]:
    """A project folder (holdout files, own model tests, mlgate.yaml from CONFIG) -> its mlgate.yaml."""

    def make(**overrides: str) -> Path:
        root = tmp_path_factory.mktemp("project")
        for name in ("holdout.csv", "unlabelled.csv"):
            shutil.copy(data_dir / name, root / name)
        (root / "tests" / "model").mkdir(parents=True)
        (root / "tests" / "model" / "test_own.py").write_text(OWN_TESTS)
        (root / "tests" / "failing").mkdir()
        (root / "tests" / "failing" / "test_large.py").write_text(FAILING_TEST)
        path = root / "mlgate.yaml"
        path.write_text(CONFIG.substitute({**DEFAULTS, **overrides}))
        return path

    return make


def run(config: Path, store: SimpleNamespace, candidate: str) -> ModelTestReport:
    return run_model_tests(
        load_config(config),
        candidate_uri=store.models[candidate],
        tracking_uri=store.uri,
        junit_path=config.parent / "reports" / "model-tests.xml",
    )


def by_id(report: ModelTestReport) -> dict[str, dict[str, Any]]:
    return {check["id"]: check for check in report.checks}


# --- whole runs --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_model(make_project: Callable[..., Path], store: SimpleNamespace) -> ModelTestReport:
    """The good model when there is no champion yet, with the project's own tests."""
    crown(store, None)
    return run(make_project(tests="[tests/model]"), store, "good")


@pytest.fixture(scope="module")
def better_than_blind(make_project: Callable[..., Path], store: SimpleNamespace) -> ModelTestReport:
    """The good model against a champion that ignores the amount, with the project's own tests."""
    crown(store, "blind")
    return run(make_project(tests="[tests/model]"), store, "good")


@pytest.fixture(scope="module")
def worse_than_good(make_project: Callable[..., Path], store: SimpleNamespace) -> ModelTestReport:
    """The blind model against the good champion."""
    crown(store, "good")
    return run(make_project(), store, "blind")


def test_first_model_passes_on_thresholds_without_a_baseline(first_model: ModelTestReport) -> None:
    report = first_model
    assert report.passed and report.promotable and report.exit_code == 0
    checks = by_id(report)
    assert set(checks) == {
        "performance.roc_auc", "performance.pr_auc", "performance.slices.country", "performance.latency.batch_100",
        "behavioral.minimum_functionality[0]", "behavioral.invariance[0]", "behavioral.directional[0]",
        "behavioral.directional[1]", "baseline.roc_auc", "baseline.pr_auc",
    }  # fmt: skip
    for check_id in ("baseline.roc_auc", "baseline.pr_auc"):
        assert checks[check_id]["outcome"] == "skipped"
        assert "no baseline yet" in checks[check_id]["message"]
        assert "models:/toy@champion does not exist" in checks[check_id]["message"]
        assert "has no version with the alias @champion yet" in checks[check_id]["message"]
    others = [c for c in report.checks if c["family"] != "baseline"]
    assert all(c["outcome"] == "passed" for c in others), others
    assert report.raw["champion"] is None
    assert "no baseline yet" in report.raw["promotion"]
    assert report.metrics("candidate")["roc_auc"] == pytest.approx(0.749, abs=0.01)
    assert checks["performance.slices.country"]["message"] == "every slice meets roc_auc >= 0.5"
    # Each check points at its line of mlgate.yaml.
    text = (report.junit_path.parent.parent / "mlgate.yaml").read_text()
    assert checks["performance.slices.country"]["line"] == line_with(text, "slice-column")
    assert checks["behavioral.directional[0]"]["line"] == line_with(text, "amount-case")
    assert checks["performance.latency.batch_100"]["bound"] == "p95 <= 10000 ms"  # measured, never asserted on


def test_junit_xml_lists_every_check_and_own_test(first_model: ModelTestReport) -> None:
    assert first_model.junit_path.is_file()
    suite = ET.parse(first_model.junit_path).getroot()
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert {check["id"] for check in first_model.checks} <= set(cases)
    assert cases["baseline.roc_auc"].find("skipped") is not None
    assert cases["performance.roc_auc"].find("failure") is None
    assert {"test_scores_are_probabilities", "test_amount_raises_the_score"} <= set(cases)


def test_own_model_tests_run_with_the_fixtures(
    first_model: ModelTestReport, better_than_blind: ModelTestReport
) -> None:
    def outcomes(report: ModelTestReport) -> dict[str, str]:
        return {t["nodeid"].split("::")[-1]: t["outcome"] for t in report.tests if t["nodeid"].startswith("tests/")}

    first = outcomes(first_model)
    assert first["test_scores_are_probabilities"] == "passed"
    assert first["test_amount_raises_the_score"] == "passed"
    assert first["test_agrees_with_the_champion"] == "skipped"  # champion_model skips while there is none
    skipped = next(t for t in first_model.tests if t["nodeid"].endswith("test_agrees_with_the_champion"))
    assert "no champion: models:/toy@champion does not exist yet" in skipped["message"]
    assert outcomes(better_than_blind)["test_agrees_with_the_champion"] == "passed"
    assert not first_model.user_failures and not better_than_blind.user_failures


def test_better_candidate_than_champion_is_promotable(
    better_than_blind: ModelTestReport, store: SimpleNamespace
) -> None:
    report = better_than_blind
    assert report.passed and report.promotable
    champion = report.raw["champion"]
    assert champion["version"] == store.versions["blind"]
    assert champion["metrics"]["roc_auc"] == pytest.approx(0.596, abs=0.01)
    assert report.metrics("candidate")["roc_auc"] - champion["metrics"]["roc_auc"] > 0.1
    checks = by_id(report)
    assert checks["baseline.roc_auc"]["outcome"] == "passed"
    assert checks["baseline.roc_auc"]["champion"] == pytest.approx(champion["metrics"]["roc_auc"])
    assert report.raw["promotion"].startswith("roc_auc beats the champion by +0.1")
    # The champion's own pass rate is shown next to the candidate's: blind to amount, it never increases.
    assert checks["behavioral.directional[0]"]["value"] == 1.0
    assert checks["behavioral.directional[0]"]["champion"] == 0.0


def test_worse_candidate_fails_on_baseline_and_direction(worse_than_good: ModelTestReport) -> None:
    report = worse_than_good
    assert not report.passed and not report.promotable
    assert report.exit_code == 1
    failed = {check["id"] for check in report.checks if check["outcome"] == "failed"}
    assert failed == {"baseline.roc_auc", "baseline.pr_auc", "behavioral.directional[0]"}
    assert report.raw["promotion"] == "a check failed"
    direction = by_id(report)["behavioral.directional[0]"]
    assert direction["value"] == 0.0
    assert direction["message"].startswith(
        "0/1000 rows in scope keep score increase when amount is perturbed (1000 of 1000 rows in scope: the "
        "sampled ones that the perturbation changes; median change +0)"
    )
    assert direction["rows"] == 1000
    assert direction["cases"][0]["amount after"] == pytest.approx(direction["cases"][0]["amount before"] + 500)
    assert direction["cases"][0]["score after"] == direction["cases"][0]["score before"]
    regression = by_id(report)["baseline.roc_auc"]
    assert "vs champion" in regression["message"] and "allowed -0.01" in regression["message"]

    text = render(report, "mlgate.yaml")
    assert "### mlgate test-model: ❌ failed · not promotable" in text
    roc_row = next(line for line in text.splitlines() if line.startswith("| roc_auc |"))
    assert roc_row.endswith("| >= 0.55, >= champ. - 0.01 | ❌ |")
    direction_row = next(line for line in text.splitlines() if "a larger amount raises the risk" in line)
    assert "❌" in direction_row and "pass rate >= 0.9" in direction_row
    assert "<details open><summary>❌ a larger amount raises the risk: first failing cases</summary>" in text
    assert "| amount before | amount after | score before | score after |" in text


def run_cli(
    report: ModelTestReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, dict[str, str], str]:
    """`mlgate test-model` around a real run's report: exit code, stdout, step outputs and job summary."""
    monkeypatch.setattr(mlgate.modeltest, "run_model_tests", lambda loaded, **kwargs: report)
    outputs, summary = tmp_path / "outputs.txt", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    config = report.junit_path.parent.parent / "mlgate.yaml"
    code = cli.main(["test-model", "--config", str(config), "--model", "models:/m-x", "--tracking-uri", "sqlite://",
                     "--no-comment"])  # fmt: skip
    values: dict[str, str] = {}
    lines = outputs.read_text().splitlines()
    for index, line in enumerate(lines):  # name<<delimiter / value / delimiter
        if "<<ghadelimiter_" in line:
            values[line.split("<<")[0]] = lines[index + 1]
    return code, capsys.readouterr().out, values, summary.read_text()


def test_cli_fails_the_gate_naming_the_checks(
    worse_than_good: ModelTestReport,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, outputs, summary = run_cli(worse_than_good, tmp_path, monkeypatch, capsys)
    assert code == 1
    assert "3 model check(s) failed: behavioral.directional[0], baseline.roc_auc, baseline.pr_auc" in out
    config = worse_than_good.junit_path.parent.parent / "mlgate.yaml"
    line = line_with(config.read_text(), "amount-case")
    annotation = f"::error file={config},line={line},title=mlgate test-model%3A a larger amount raises the risk::"
    assert annotation + "behavioral.directional[0]: 0/1000 rows in scope keep score increase when amount" in out
    assert outputs["passed"] == "false" and outputs["promotable"] == "false"
    assert '"champion": {' in outputs["metrics"]
    assert "a larger amount raises the risk: first failing cases" in summary


def test_summary_counts_own_tests_skipped_for_want_of_a_champion(first_model: ModelTestReport) -> None:
    text = render(first_model, "mlgate.yaml")
    assert "#### The project's own model tests" in text
    assert "2 passed, 0 failed, 1 skipped" in text
    assert "- champion: none yet: `models:/toy@champion` does not exist, so there is no baseline to compare" in text


# --- a failing own test ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_test_fails(make_project: Callable[..., Path], store: SimpleNamespace) -> ModelTestReport:
    crown(store, None)
    return run(make_project(tests="[tests/model, tests/failing/test_large.py]"), store, "good")


def test_failing_own_test_fails_the_gate(
    own_test_fails: ModelTestReport,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = own_test_fails
    assert all(check["outcome"] != "failed" for check in report.checks)  # every declared check holds ...
    assert not report.passed and not report.promotable  # ... but the project's own test does not
    assert report.raw["promotion"] == "a check failed"
    assert [t["nodeid"] for t in report.user_failures] == ["tests/failing/test_large.py::test_recall_on_large_amounts"]
    assert "large amounts must always be flagged" in report.user_failures[0]["message"]
    code, out, outputs, summary = run_cli(report, tmp_path, monkeypatch, capsys)
    assert code == 1 and outputs["passed"] == "false"
    assert "1 model check(s) failed: tests/failing/test_large.py::test_recall_on_large_amounts" in out
    assert "#### The project's own model tests" in summary
    assert (
        "- ❌ `tests/failing/test_large.py::test_recall_on_large_amounts` (call): "
        "AssertionError: large amounts must always be flagged" in summary
    )


# --- only the project's own tests -------------------------------------------------------------------------

ONLY_OWN_TESTS = """\
version: 1
project: toy
data:
  sources:
    holdout: {path: holdout.csv}
model_tests:  # model-tests
  holdout: holdout
  label: label
  tests: TESTS
"""

PLAIN_TEST = """\
import pandas as pd


def test_holdout_has_both_classes():
    assert set(pd.read_csv("holdout.csv")["label"]) == {0, 1}
"""


def test_nothing_to_run_is_a_config_error(make_project: Callable[..., Path], store: SimpleNamespace) -> None:
    config = make_project()
    config.write_text(ONLY_OWN_TESTS.replace("TESTS", "[]"))
    with pytest.raises(ConfigError) as caught:
        run(config, store, "good")
    assert "model_tests declares no checks and model_tests.tests collected no tests" in caught.value.message
    assert caught.value.line == line_with(config.read_text(), "model-tests")


def test_own_tests_without_the_fixtures_and_no_declared_checks(
    make_project: Callable[..., Path], store: SimpleNamespace
) -> None:
    config = make_project()
    config.write_text(ONLY_OWN_TESTS.replace("TESTS", "[tests/plain]"))
    (config.parent / "tests" / "plain").mkdir()
    (config.parent / "tests" / "plain" / "test_data.py").write_text(PLAIN_TEST)
    report = run(config, store, "good")
    assert report.passed and report.checks == []
    assert [t["outcome"] for t in report.tests] == ["passed"]


# --- bad input: errors naming the mlgate.yaml key and line -------------------------------------------------


def assert_points_at(error: ConfigError | InputError, config: Path, key: str, marker: str) -> None:
    line = line_with(config.read_text(), marker)
    assert error.line == line, error.message
    assert error.file == str(config)
    assert f"{config}:{line}: {key}: " in error.message


def test_undeclared_holdout_source_is_named(make_project: Callable[..., Path], store: SimpleNamespace) -> None:
    config = make_project(holdout="training")
    with pytest.raises(ConfigError) as caught:
        run(config, store, "good")
    assert "model_tests.holdout names source 'training', which is not declared under data.sources " in str(caught.value)
    assert "(declared: holdout, scoring, unlabelled)" in caught.value.message
    assert caught.value.line == line_with(config.read_text(), "holdout")


def test_missing_test_folder_is_named(make_project: Callable[..., Path], store: SimpleNamespace) -> None:
    config = make_project(tests="[tests/model, tests/nowhere]")
    with pytest.raises(ConfigError) as caught:
        run(config, store, "good")
    assert "model_tests.tests[1] names 'tests/nowhere', which does not exist" in caught.value.message
    assert caught.value.line == line_with(config.read_text(), "tests")


def test_unlabelled_holdout_stops_the_run_before_any_check(
    make_project: Callable[..., Path], store: SimpleNamespace
) -> None:
    # Found inside the pytest run, reported through its JSON report, raised here as the same ConfigError.
    config = make_project(holdout="unlabelled")
    with pytest.raises(ConfigError) as caught:
        run(config, store, "good")
    assert_points_at(caught.value, config, "model_tests.label", "label")
    assert (
        "the holdout 'unlabelled' (unlabelled.csv) has no column 'label'; its columns: id, amount, velocity, country"
        in caught.value.message
    )
    assert "point model_tests.holdout at a labelled file" in (caught.value.hint or "")
    assert "<testcase" not in (config.parent / "reports" / "model-tests.xml").read_text()


def test_missing_holdout_file_is_an_input_error(make_project: Callable[..., Path], store: SimpleNamespace) -> None:
    config = make_project(holdout="scoring")  # declared, but its file was never pulled
    with pytest.raises(InputError) as caught:
        run(config, store, "good")
    assert caught.value.message == f"data source 'scoring': file {config.parent}/scoring/2026-01.csv does not exist"
    assert caught.value.line == line_with(config.read_text(), "scoring-path")
    assert "data.dvc: true" in (caught.value.hint or "")


@pytest.fixture
def session(
    make_project: Callable[..., Path], store: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Path, Session]]:
    """The plugin's Session built in this process (fast): what the pytest run validates before any check.

    `candidate`: a model of the store by name, or a model URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)

    def build(candidate: str = "good", champion: str | None = None, **overrides: str) -> tuple[Path, Session]:
        crown(store, champion)
        config = make_project(**overrides)
        return config, Session(load_config(config), store.models.get(candidate, candidate))

    return build


@pytest.mark.parametrize(
    ("overrides", "key", "marker", "message"),
    [
        pytest.param(
            {"slice_column": "merchant"}, "model_tests.performance.slices[0].column", "slice-column",
            "slice column 'merchant' does not exist in the holdout; columns: amount, country, id, label, velocity",
            id="slice-column",
        ),
        pytest.param(
            {"country_column": "merchant"}, "model_tests.behavioral.invariance[0].column", "invariance-column",
            "column 'merchant' does not exist in the holdout", id="perturbed-column",
        ),
        pytest.param(
            {"amount_perturb": "{add: -1000000}"}, "model_tests.behavioral.directional[0].perturb", "amount-perturb",
            "the perturbation of 'amount' makes invalid rows: 1000 of 1000 values fall below 0 "
            "(data.expectations.columns.amount; e.g. -", id="below-min",
        ),
        pytest.param(
            {"velocity_perturb": "{add: 0.5}"}, "model_tests.behavioral.directional[1].perturb", "velocity-perturb",
            "the perturbation of 'velocity' makes invalid rows: 1000 values are no longer integers (e.g. ", id="int",
        ),
        pytest.param(
            {"country_perturb": "{replace: {US: XX}}"}, "model_tests.behavioral.invariance[0].perturb",
            "invariance-perturb", "values ['XX'] are not in the allowed set of data.expectations.columns.country",
            id="allowed",
        ),
        pytest.param(
            {"country_perturb": "{add: 1}"}, "model_tests.behavioral.invariance[0].perturb", "invariance-perturb",
            "`add` needs a numeric column, but 'country' holds", id="add-to-text",
        ),
        pytest.param(
            {"mft_set": "{amount: 5.0, velocity: -3}"}, "model_tests.behavioral.minimum_functionality[0].set.velocity",
            "mft-set", "makes invalid rows: 200 of 200 values fall below 0", id="mft-set",
        ),
    ],
)  # fmt: skip
def test_bad_check_is_a_config_error_at_its_line(
    session: Callable[..., tuple[Path, Session]], overrides: dict[str, str], key: str, marker: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        session(**overrides)
    config = Path(str(caught.value.file))
    assert_points_at(caught.value, config, key, marker)
    assert message in caught.value.message


def test_champion_with_another_signature_is_an_error(
    session: Callable[..., tuple[Path, Session]], store: SimpleNamespace
) -> None:
    with pytest.raises(ConfigError) as caught:
        session(champion="narrow")
    config = Path(str(caught.value.file))
    assert_points_at(caught.value, config, "model_tests.baseline", "baseline")
    assert (
        f"the champion models:/toy@champion (version {store.versions['narrow']}) has a different input signature "
        f"from the candidate {store.models['good']}: the candidate adds country" in caught.value.message
    )
    assert "allow_signature_change: true" in (caught.value.hint or "")


def test_unloadable_candidate_is_an_input_error(session: Callable[..., tuple[Path, Session]]) -> None:
    with pytest.raises(InputError) as caught:
        session(candidate="models:/m-00000000000000000000000000000000")
    assert caught.value.message.startswith("cannot load model models:/m-00000000000000000000000000000000: ")
    assert "model-uri output of the train step" in (caught.value.hint or "")


def test_allow_signature_change_compares_each_model_on_its_own_columns(
    session: Callable[..., tuple[Path, Session]],
) -> None:
    _, gate = session(champion="narrow", allow="true")
    assert gate.champion is not None
    assert gate.champion.input_schema == {"amount": "DataType.double", "velocity": "DataType.long"}
    assert gate.candidate.input_schema is not None and "country" in gate.candidate.input_schema
    # The same scores from different inputs: equal metrics, so not promotable by the 0.01 margin.
    assert gate.champion_metrics == pytest.approx(gate.candidate_metrics)
    assert promotion(gate, True) == (False, "roc_auc beats the champion by +0.0000, less than the margin 0.01")


def test_unregistered_baseline_model_means_no_baseline_yet(session: Callable[..., tuple[Path, Session]]) -> None:
    # The very first run of a project: nothing is registered under baseline.model yet.
    _, gate = session(champion="good", baseline_model="fraud-detection")
    assert gate.champion is None and gate.champion_metrics is None
    assert promotion(gate, True) == (
        True, "every check passed; no baseline yet (models:/fraud-detection@champion does not exist: the registry "
        "has no model named 'fraud-detection' yet (a first model; if one exists, check model_tests.baseline.model))",
    )  # fmt: skip


def test_minimum_functionality_accepts_an_integer_for_a_float_column(
    session: Callable[..., tuple[Path, Session]],
) -> None:
    _, gate = session(mft_set="{amount: 5, velocity: 0}")
    check = next(c for c in declared_checks(gate.loaded) if c.id == "behavioral.minimum_functionality[0]")
    assert check.run(gate).outcome == "passed"


# --- the schema --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "marker", "got"),
    [
        ({"country_perturb": "{replace: {US: GB}, shuffle: true}"}, "model_tests.behavioral.invariance[0].perturb",
         "invariance-perturb", "got replace, shuffle"),
        ({"amount_perturb": "{add: 1, scale: 2}"}, "model_tests.behavioral.directional[0].perturb", "amount-perturb",
         "got add, scale"),
        ({"amount_perturb": "{clip: true}"}, "model_tests.behavioral.directional[0].perturb", "amount-perturb",
         "got none"),
    ],
)  # fmt: skip
def test_perturbation_needs_exactly_one_operation(
    make_project: Callable[..., Path], overrides: dict[str, str], key: str, marker: str, got: str
) -> None:
    config = make_project(**overrides)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    line = line_with(config.read_text(), marker)
    assert caught.value.line == line
    assert caught.value.message.startswith(f"{config}:{line}: invalid key {key}: ")
    assert f"give exactly one of add, scale, set, replace, shuffle ({got})" in caught.value.message


# --- pure functions ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def declared(make_project: Callable[..., Path]) -> LoadedConfig:
    return load_config(make_project())


WHERE = ("model_tests", "behavioral", "directional", 0)


def test_clip_keeps_values_in_the_declared_range(declared: LoadedConfig) -> None:
    frame = pd.DataFrame({"amount": [10.0, 99_990.0, 50.0], "velocity": [0, 5, 999]})
    with pytest.raises(
        ConfigError, match=r"1 of 3 values fall above 100000 \(data.expectations.columns.amount; e.g. 100090\)"
    ):
        perturb(declared, frame, "amount", Perturbation(add=100), WHERE)
    clipped = perturb(declared, frame, "amount", Perturbation(add=100, clip=True), WHERE)
    assert clipped["amount"].tolist() == [110.0, 100_000.0, 150.0]
    assert perturb(declared, frame, "amount", Perturbation(scale=-1, clip=True), WHERE)["amount"].tolist() == [0.0] * 3
    velocity = perturb(declared, frame, "velocity", Perturbation(add=3, clip=True), WHERE)["velocity"]
    assert velocity.tolist() == [3, 8, 1000] and velocity.dtype == frame["velocity"].dtype
    assert frame["amount"].tolist() == [10.0, 99_990.0, 50.0]  # the input is not changed


def test_shuffle_permutes_the_values_reproducibly(declared: LoadedConfig) -> None:
    frame = pd.DataFrame({"country": COUNTRIES * 50, "velocity": list(range(200))})
    first = perturb(declared, frame, "velocity", Perturbation(shuffle=True), WHERE, seed=3)
    assert sorted(first["velocity"]) == list(range(200)) and first["velocity"].tolist() != list(range(200))
    assert (
        first["velocity"].tolist()
        == perturb(declared, frame, "velocity", Perturbation(shuffle=True), WHERE, 3)["velocity"].tolist()
    )
    assert first["country"].tolist() == frame["country"].tolist()  # other columns untouched
    countries = perturb(declared, frame, "country", Perturbation(shuffle=True), WHERE, seed=3)["country"]
    assert countries.value_counts().to_dict() == frame["country"].value_counts().to_dict()


def test_a_perturbation_that_changes_nothing_is_an_error(declared: LoadedConfig) -> None:
    # An invariance check on unchanged rows would pass whatever the model does.
    frame = pd.DataFrame({"country": COUNTRIES * 2, "velocity": [0, 1] * len(COUNTRIES)})
    with pytest.raises(
        ConfigError,
        match=r"directional\[0\]\.perturb: no row in scope changes: the perturbation of 'country' leaves each "
        r"of the 8 rows as it was",
    ):
        perturb(declared, frame, "country", Perturbation(replace={"XX": "US"}), WHERE)
    swapped = perturb(declared, frame, "velocity", Perturbation(replace={0: 1}), WHERE)["velocity"]
    assert swapped.tolist() == [1] * len(frame)  # integer keys map integer values


def test_a_whole_number_set_on_a_float_column_stays_float(declared: LoadedConfig) -> None:
    frame = pd.DataFrame({"amount": [10.5, 20.25]})
    assert perturb(declared, frame, "amount", Perturbation(set=5), WHERE)["amount"].dtype == frame["amount"].dtype


def _session(metrics: dict[str, float] | None, baseline: BaselineChecks | None) -> Any:
    return SimpleNamespace(
        settings=SimpleNamespace(baseline=baseline),
        candidate_metrics={"roc_auc": 0.80, "pr_auc": 0.50},
        champion_metrics=metrics,
        baseline_name=f"models:/{baseline.model}@{baseline.alias}" if baseline else None,
        no_champion="registered model 'toy' has no version with the alias @champion yet",
    )


def test_promotion_rules() -> None:
    margin = BaselineChecks(model="toy", promotion_margin=0.01)
    champion = {"roc_auc": 0.78, "pr_auc": 0.55}
    assert promotion(_session(champion, margin), passed=False) == (False, "a check failed")
    assert promotion(_session(None, None), passed=True) == (True, "every check passed (no baseline configured)")
    assert promotion(_session(None, margin), passed=True) == (
        True, "every check passed; no baseline yet (models:/toy@champion does not exist: registered model 'toy' "
        "has no version with the alias @champion yet)",
    )  # fmt: skip
    assert promotion(_session(champion, margin), passed=True) == (
        True, "roc_auc beats the champion by +0.0200 (margin 0.01)",
    )  # fmt: skip
    assert promotion(_session({"roc_auc": 0.795}, margin), passed=True) == (
        False, "roc_auc beats the champion by +0.0050, less than the margin 0.01",
    )  # fmt: skip
    by_pr = BaselineChecks(model="toy", promotion_metric="pr_auc")  # margin 0: a tie is enough, a loss is not
    assert promotion(_session({"pr_auc": 0.50}, by_pr), passed=True)[0] is True
    assert promotion(_session(champion, by_pr), passed=True) == (
        False, "pr_auc beats the champion by -0.0500, less than the margin 0",
    )  # fmt: skip


DELTAS = np.array([-0.2, -0.05, 0.0, 0.05, 0.2])


@pytest.mark.parametrize(
    ("expect", "tolerance", "passing", "rule"),
    [
        ("increase", 0.0, [False, False, False, True, True], "score increase"),
        ("increase", 0.05, [False, False, False, False, True], "score increase (tolerance 0.05)"),
        ("decrease", 0.0, [True, True, False, False, False], "score decrease"),
        ("decrease", 0.05, [True, False, False, False, False], "score decrease (tolerance 0.05)"),
        ("not_decrease", 0.0, [False, False, True, True, True], "score not decrease"),
        ("not_decrease", 0.05, [False, True, True, True, True], "score not decrease (tolerance 0.05)"),
        ("not_increase", 0.0, [True, True, True, False, False], "score not increase"),
        ("not_increase", 0.05, [True, True, True, True, False], "score not increase (tolerance 0.05)"),
    ],
)
def test_directional_rules(expect: str, tolerance: float, passing: list[bool], rule: str) -> None:
    case = DirectionalCase(name="n", column="c", perturb=Perturbation(add=1), expect=expect, tolerance=tolerance)  # type: ignore[arg-type]
    passed, words = _passes(case, DELTAS)
    assert passed.tolist() == passing
    assert words == rule


def test_invariance_rule() -> None:
    case = InvarianceCase(name="n", column="c", perturb=Perturbation(add=1), tolerance=0.05)
    passed, words = _passes(case, DELTAS)
    assert passed.tolist() == [False, True, True, True, False]
    assert words == "|score change| <= 0.05"


def test_a_check_that_raises_is_named_in_the_failure_and_the_summary() -> None:
    # e.g. the model's predict fails on the perturbed rows: pytest records an error, no check result.
    raw = {
        "passed": False, "promotable": False, "promotion": "a check failed", "baseline": None, "champion": None,
        "holdout": {"source": "holdout", "rows": 10},
        "candidate": {"uri": "models:/m-1", "version": None, "threshold": 0.5, "metrics": {"roc_auc": 0.8}},
        "checks": [{"id": "performance.roc_auc", "family": "performance", "name": "roc_auc", "line": 3,
                    "outcome": "passed", "value": 0.8, "bound": ">= 0.7", "champion": None, "message": "",
                    "cases": []}],
        "tests": [{"nodeid": "mlgate.yaml::behavioral.directional[0]", "when": "call", "outcome": "failed",
                   "message": "Traceback ...\nValueError: amount above 50000 is not supported", "seconds": 0.1}],
    }  # fmt: skip
    report = ModelTestReport(raw=raw, exit_code=1, junit_path=Path("model-tests.xml"))
    assert [t["nodeid"] for t in report.errored_checks] == ["mlgate.yaml::behavioral.directional[0]"]
    assert report.user_failures == []
    body = render(report, "mlgate.yaml")
    assert "#### Checks that could not run" in body
    assert "`mlgate.yaml::behavioral.directional[0]`: ValueError: amount above 50000 is not supported" in body


def test_the_session_reads_the_mlgate_yaml_named_on_the_command_line() -> None:
    # `pytest ci/mlgate.yaml` without --mlgate-config: checks and session must come from one file.
    from mlgate.modeltest import plugin

    def config(option: str | None, collected: Path | None) -> Any:
        stash = {plugin._COLLECTED: collected} if collected else {}
        return SimpleNamespace(getoption=lambda name: option, stash=stash, rootpath=Path("/project"))

    assert plugin._config_path(config(None, Path("/project/ci/mlgate.yaml"))) == Path("/project/ci/mlgate.yaml")
    assert plugin._config_path(config(None, None)) == Path("/project/mlgate.yaml")
    assert plugin._config_path(config("/elsewhere/mlgate.yaml", Path("/project/ci/mlgate.yaml"))) == Path(
        "/elsewhere/mlgate.yaml"
    )


# --- which output of predict is the score (model_tests.score) ----------------------------------------------


def test_predict_proba_reads_the_column_score_names(
    session: Callable[..., tuple[Path, Session]], store: SimpleNamespace, data_dir: Path
) -> None:
    # scikit-learn's flavor with pyfunc_predict_fn="predict_proba": an array with one column per class.
    _, gate = session(candidate="proba", score="1")
    holdout = pd.read_csv(data_dir / "holdout.csv")[["amount", "velocity"]]
    np.testing.assert_array_equal(gate.candidate.holdout_scores(gate.holdout), store.proba.predict_proba(holdout)[:, 1])
    assert gate.candidate_metrics["roc_auc"] == pytest.approx(0.749, abs=0.01)
    results = {check.id: check.run(gate) for check in declared_checks(gate.loaded)}
    assert results["performance.roc_auc"].outcome == "passed"
    assert results["behavioral.directional[0]"].outcome == "passed"  # a larger amount raises the score
    # The other column is the other class: the index decides, nothing is guessed.
    _, other = session(candidate="proba", score="0")
    assert other.candidate_metrics["roc_auc"] == pytest.approx(1 - gate.candidate_metrics["roc_auc"])


@pytest.mark.parametrize("score", ["fraud", "2"])
def test_a_column_of_a_frame_by_name_or_position(session: Callable[..., tuple[Path, Session]], score: str) -> None:
    _, gate = session(candidate="columns", score=score)
    expected = modeltest_models.Logistic().predict(None, gate.holdout.frame)["score"].to_numpy()
    np.testing.assert_array_equal(gate.candidate.holdout_scores(gate.holdout), expected)


@pytest.mark.parametrize("score", ["null", "0", "score"])
def test_a_single_column_needs_no_score(session: Callable[..., tuple[Path, Session]], score: str) -> None:
    _, gate = session(score=score)
    expected = modeltest_models.Logistic().predict(None, gate.holdout.frame)["score"].to_numpy()
    np.testing.assert_array_equal(gate.candidate.holdout_scores(gate.holdout), expected)


FRAME_CHOICES = "set model_tests.score to one of the column names (decision, legit, fraud) or a position 0..2"
ARRAY_CHOICES = "set model_tests.score to an index 0..1 (scikit-learn's predict_proba: 1 is the class 1 of a 0/1 label)"


@pytest.mark.parametrize(
    ("candidate", "score", "message", "hint"),
    [
        pytest.param(
            "proba", "null", "predict returns an array of shape (3000, 2) (one column per class, without names) "
            "and model_tests.score does not say which column is the positive-class score", ARRAY_CHOICES,
            id="array-no-score",
        ),
        pytest.param(
            "proba", "2", "predict returns an array of shape (3000, 2), so index 2 is out of range", ARRAY_CHOICES,
            id="array-index",
        ),
        pytest.param(
            "proba", "fraud", "predict returns an array of shape (3000, 2), whose columns have no names; 'fraud' "
            "names none", ARRAY_CHOICES, id="array-name",
        ),
        pytest.param(
            "columns", "null", "predict returns 3 columns (decision, legit, fraud) and model_tests.score does not say "
            "which one is the positive-class score", FRAME_CHOICES, id="frame-no-score",
        ),
        pytest.param(
            "columns", "fraud_probability", "predict returns the columns decision, legit, fraud; none is named "
            "'fraud_probability'", FRAME_CHOICES, id="frame-name",
        ),
        pytest.param(
            "columns", "3", "predict returns 3 column(s) (decision, legit, fraud), so position 3 is out of range",
            FRAME_CHOICES, id="frame-index",
        ),
        pytest.param(
            "columns", "decision", "predict returns non-numeric values in column 'decision' (", "point "
            "model_tests.score at the positive-class probability or score, not a predicted label", id="frame-labels",
        ),
        pytest.param(
            "good", "probability", "predict returns the columns score; none is named 'probability'",
            "remove model_tests.score (a single output needs none) or set it to 'score' or 0", id="single-name",
        ),
    ],
)  # fmt: skip
def test_a_score_that_names_no_output_is_an_error_listing_the_outputs(
    session: Callable[..., tuple[Path, Session]],
    store: SimpleNamespace,
    candidate: str,
    score: str,
    message: str,
    hint: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        session(candidate=candidate, score=score)
    config = Path(str(caught.value.file))
    assert_points_at(caught.value, config, "model_tests.score", "score")
    assert f"model_tests.score: {store.models[candidate]}: {message}" in caught.value.message
    assert (caught.value.hint or "").startswith(hint)


def test_a_score_error_reaches_the_cli_as_one_message_and_exit_code_2(
    make_project: Callable[..., Path],
    store: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Found inside the pytest run in the project venv; the user reads one message and its hint, no traceback.
    crown(store, None)
    config = make_project(score="null")
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.chdir(config.parent)
    code = cli.main(["test-model", "--config", str(config), "--model", store.models["proba"], "--tracking-uri",
                     store.uri, "--no-comment"])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 2
    message = f"model_tests.score: {store.models['proba']}: predict returns an array of shape (3000, 2)"
    hint = f"hint: {ARRAY_CHOICES}"
    assert (out + err).count(message) == 1 and (out + err).count(hint) == 1
    assert message in out and hint in err  # the annotation on stdout, the hint on stderr
    assert "Traceback" not in out + err and "INTERNALERROR" not in out + err


def test_a_model_that_fails_on_the_holdout_is_one_input_error(session: Callable[..., tuple[Path, Session]]) -> None:
    with pytest.raises(InputError) as caught:
        session(candidate="small-batches")
    assert caught.value.message.endswith(
        "predict failed on the holdout 'holdout' (3000 rows): ValueError: batches above 100 rows are not "
        "supported (got 3000)"
    )
    assert "mlflow.pyfunc.load_model" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("output", "score", "expected"),
    [
        (pd.Series([0.1, 0.9], name="p"), None, [0.1, 0.9]),
        (pd.Series([0.1, 0.9]), 0, [0.1, 0.9]),
        (np.array([[0.1], [0.9]]), None, [0.1, 0.9]),
        (np.array([0.1, 0.9], dtype=object), None, [0.1, 0.9]),
        (np.array([True, False]), None, [1.0, 0.0]),
        ([[0.9, 0.1], [0.2, 0.8]], 1, [0.1, 0.8]),
    ],
)
def test_score_vector_reads_each_kind_of_output(
    declared: LoadedConfig, output: Any, score: str | int | None, expected: list[float]
) -> None:
    assert score_vector(declared, output, score, 2, "models:/m").tolist() == expected


@pytest.mark.parametrize(
    ("output", "error", "message"),
    [
        (
            np.array(["fraud", "ok"]),
            ConfigError,
            "predict returns non-numeric values in its scores (<U5, e.g. 'fraud')",
        ),
        (np.zeros((2, 2, 2)), InputError, "models:/m: predict returns an array of shape (2, 2, 2); mlgate reads one"),
        (np.array([0.5, np.nan]), InputError, "models:/m: predict returned NaN as the score of 1 of 2 rows"),
        (np.array([0.5, 0.2, 0.1]), InputError, "models:/m: predict returned 3 scores for 2 rows"),
    ],
)
def test_score_vector_rejects_outputs_without_one_number_per_row(
    declared: LoadedConfig, output: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        score_vector(declared, output, None, 2, "models:/m")
    assert message in str(caught.value)


# --- behavioral checks judge the rows in scope -------------------------------------------------------------


def test_a_replace_judges_only_the_rows_it_changes(session: Callable[..., tuple[Path, Session]]) -> None:
    _, gate = session()  # the country check replaces US with GB: the other countries are out of scope
    scope = gate.scopes["invariance[0]"]
    assert scope.sampled == 1000 and 200 < scope.rows < 300
    assert set(scope.base["country"]) == {"US"} and set(scope.changed["country"]) == {"GB"}
    result = next(c for c in declared_checks(gate.loaded) if c.id == "behavioral.invariance[0]").run(gate)
    assert result.outcome == "passed" and result.rows == scope.rows
    assert result.message.startswith(
        f"{scope.rows}/{scope.rows} rows in scope keep |score change| <= 0.001 when country is perturbed "
        f"({scope.rows} of 1000 rows in scope: the sampled ones that the perturbation changes; median change +0)"
    )


def test_unchanged_rows_are_not_failures_of_a_directional_check(session: Callable[..., tuple[Path, Session]]) -> None:
    # Only rows at velocity 0 change: ~2% of the sample. Counted as failures, they would fail an `increase`.
    def run(expect: str) -> Any:
        _, gate = session(velocity_perturb="{replace: {0: 5}}", velocity_expect=expect)
        check = next(c for c in declared_checks(gate.loaded) if c.id == "behavioral.directional[1]")
        return gate.scopes["directional[1]"], check.run(gate)

    scope, increase = run("increase")
    assert 0 < scope.rows < 50 and set(scope.base["velocity"]) == {0}
    assert increase.outcome == "passed" and increase.value == 1.0 and increase.rows == scope.rows
    _, decrease = run("decrease")  # the same rows show the check can fail: the model does raise the score
    assert decrease.outcome == "failed" and decrease.value == 0.0
    assert decrease.message.startswith(f"0/{scope.rows} rows in scope keep score decrease when velocity is perturbed")


def test_where_selects_the_rows_a_check_samples(session: Callable[..., tuple[Path, Session]], data_dir: Path) -> None:
    holdout = pd.read_csv(data_dir / "holdout.csv")
    _, gate = session(
        country_where="{country: US}", velocity_where="{country: [DE, FR], velocity: [1, 2]}",
        mft_where="{country: DE}",
    )  # fmt: skip
    checks = {check.id: check for check in declared_checks(gate.loaded)}
    us = int((holdout["country"] == "US").sum())  # fewer than `rows: 1000`: every matching row is sampled
    invariance = checks["behavioral.invariance[0]"].run(gate)
    assert invariance.rows == us
    assert f"({us} of {us} rows in scope: the sampled ones where country = US that the perturbation changes; " in (
        invariance.message
    )
    directional = gate.scopes["directional[1]"]
    matching = holdout[holdout["country"].isin(["DE", "FR"]) & holdout["velocity"].isin([1, 2])]
    assert directional.sampled == len(matching) and directional.rows == len(matching)
    assert set(directional.base["country"]) == {"DE", "FR"} and set(directional.base["velocity"]) == {1, 2}
    assert set(directional.changed["velocity"]) == {3, 4}
    assert "where country in [DE, FR] and velocity in [1, 2]" in checks["behavioral.directional[1]"].run(gate).message
    mft = checks["behavioral.minimum_functionality[0]"].run(gate)
    assert set(gate.scopes["minimum_functionality[0]"].base["country"]) == {"DE"}
    assert mft.rows == 200 and mft.message.endswith("(threshold 0.5; 200 sampled rows where country = DE)")


@pytest.mark.parametrize(
    ("overrides", "key", "marker", "message"),
    [
        pytest.param(
            {"country_where": "{country: XX}"}, "model_tests.behavioral.invariance[0].where", "invariance-where",
            "where country = 'XX' matches none of the holdout's 3000 rows (country holds e.g. ", id="no-row",
        ),
        pytest.param(
            {"mft_where": "{merchant: shop}"}, "model_tests.behavioral.minimum_functionality[0].where.merchant",
            "mft-where", "column 'merchant' does not exist in the holdout", id="no-column",
        ),
        pytest.param(
            {"velocity_where": "{velocity: ['1']}"}, "model_tests.behavioral.directional[1].where", "velocity-where",
            "where velocity in ['1'] matches none of the holdout's 3000 rows", id="text-for-a-number",
        ),
        pytest.param(
            {"country_where": "{country: DE}"}, "model_tests.behavioral.invariance[0].perturb", "invariance-perturb",
            "no row in scope changes: the perturbation of 'country' leaves each of the ", id="nothing-in-scope",
        ),
    ],
)  # fmt: skip
def test_a_where_without_rows_in_scope_is_a_config_error(
    session: Callable[..., tuple[Path, Session]], overrides: dict[str, str], key: str, marker: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        session(**overrides)
    assert_points_at(caught.value, Path(str(caught.value.file)), key, marker)
    assert message in caught.value.message
    if marker == "invariance-perturb":  # where: {country: DE} keeps no US row for `replace: {US: GB}` to change
        assert "sampled rows where country = DE as it was" in caught.value.message


def test_the_summary_shows_the_rows_in_scope(first_model: ModelTestReport) -> None:
    checks = by_id(first_model)
    invariance = checks["behavioral.invariance[0]"]
    assert 200 < invariance["rows"] < 300 and checks["performance.slices.country"]["rows"] is None
    text = render(first_model, "mlgate.yaml")
    assert "| check | candidate | champion | required | rows | result | detail |" in text
    row = next(line for line in text.splitlines() if "the country does not matter" in line)
    assert f"| pass rate >= 0.99 | {invariance['rows']} | ✅ |" in row


def test_a_config_under_another_name_runs_its_declared_checks(
    make_project: Callable[..., Path], store: SimpleNamespace, first_model: ModelTestReport
) -> None:
    # Two models in one repository keep their configs side by side (mlgate-toy.yaml, mlgate-other.yaml): the
    # plugin collects the one named by --mlgate-config whatever its name. It used to collect only mlgate.yaml,
    # so this run found nothing to collect and failed with pytest's "not found".
    crown(store, None)
    config = make_project(tests="[tests/model]")
    renamed = config.rename(config.with_name("mlgate-toy.yaml"))
    report = run(renamed, store, "good")
    assert report.passed, report.checks
    assert set(by_id(report)) == set(by_id(first_model)) and any(i.startswith("performance.") for i in by_id(report))


# --- latency with pinned threads ---------------------------------------------------------------------------


def test_latency_is_measured_with_pinned_threads(first_model: ModelTestReport) -> None:
    latency = by_id(first_model)["performance.latency.batch_100"]
    assert "; 1 thread (model_tests.performance.latency_threads; pinned: " in latency["message"]


def test_latency_sets_aside_a_round_another_process_slowed_but_not_a_tail_of_the_models_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two models timed alternately on a clock their calls advance: `burst` takes 20 ms in one round
    only (as a neighbour's load would make it), `tail` on every tenth call of every round (a tail of its
    own), 1 ms otherwise. The burst's round is set aside; the tail shows in each round's p95, so it stays."""
    repeats, now = 10, [0.0]
    calls = {"burst": 0, "tail": 0}
    monkeypatch.setattr(mlgate.modeltest.context.time, "perf_counter", lambda: now[0])

    def model(name: str, slow: Callable[[int], bool]) -> Any:
        def predict(data: pd.DataFrame) -> None:
            timed = calls[name] - LATENCY_WARMUP_CALLS
            calls[name] += 1
            now[0] += 0.020 if timed >= 0 and slow(timed) else 0.001

        return SimpleNamespace(inputs=lambda frame: frame, pyfunc=SimpleNamespace(predict=predict))

    burst = model("burst", lambda i: i // repeats == 1)
    tail = model("tail", lambda i: i % repeats == repeats - 1)
    (kept_burst, kept_tail), _ = latency_ms([burst, tail], pd.DataFrame({"x": range(4)}), 4, repeats, threads=1)
    assert calls == {"burst": LATENCY_WARMUP_CALLS + LATENCY_ROUNDS * repeats} | {"tail": calls["burst"]}
    assert kept_burst == pytest.approx({"p50_ms": 1.0, "p95_ms": 1.0})
    assert kept_tail["p50_ms"] == pytest.approx(1.0) and kept_tail["p95_ms"] > 10


def test_pinned_threads_limit_the_pools_and_torch_and_restore_them() -> None:
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[tuple[set[int], int]] = []

    class Recorder:
        def predict(self, data: pd.DataFrame) -> None:
            seen.append(({pool["num_threads"] for pool in threadpool_info()}, torch.get_num_threads()))

    model: Any = SimpleNamespace(inputs=lambda frame: frame, pyfunc=Recorder())
    original = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threadpool_limits(limits=2):
            outside = {pool["num_threads"] for pool in threadpool_info()}
            measured, pinned = latency_ms([model], pd.DataFrame({"x": range(10)}), 4, 3, threads=1)
            assert {pool["num_threads"] for pool in threadpool_info()} == outside  # restored
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)
    assert outside == {2} and "torch" in pinned and len(pinned) > 1  # torch and at least one native pool
    assert seen == [({1}, 1)] * (3 + 3 * LATENCY_ROUNDS)  # 3 warm-up calls, then 3 timed calls a round
    assert set(measured[0]) == {"p50_ms", "p95_ms"}
    assert threads_note(1, pinned).startswith("1 thread (model_tests.performance.latency_threads; pinned: ")
    assert threads_note(4, []) == "4 threads requested, nothing to pin (threadpoolctl not installed, torch not loaded)"
