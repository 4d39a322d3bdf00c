"""mlgate.yaml: valid files load; every kind of mistake names the file, the key, the line and the fix."""

from __future__ import annotations

import json
import math
import re
import typing
from pathlib import Path

import pytest
from mlgate.cli import main
from mlgate.config import MlgateConfig, json_schema, load_config
from mlgate.errors import ConfigError
from pydantic import BaseModel

GOOD = """\
version: 1
project: demo
data:
  sources:
    train: {path: data/train.csv}
    reference: {path: data/ref.csv}
  drift:
    reference: reference
    current: train
    psi: {warn: 0.1, fail: 0.25}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlgate.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_loads_with_key_lines(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, GOOD))
    assert loaded.model.project == "demo"
    assert loaded.model.data.drift is not None and loaded.model.data.drift.psi.fail == 0.25
    assert loaded.line_of("data", "drift", "psi") == 10
    assert loaded.line_of("data", "drift", "psi", "fail", "nested") == 10  # nearest enclosing key
    assert loaded.root == tmp_path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in info.value.message


def test_unknown_key_names_key_line_and_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD.replace("  drift:", "  drfit:")))
    error = info.value
    assert "data.drfit" in error.message
    assert error.line == 7
    assert error.hint and "mlgate schema" in error.hint


def test_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.drift\.psi\.fail") as info:
        load_config(write(tmp_path, GOOD.replace("fail: 0.25", "fail: lots")))
    assert info.value.line == 10


def test_bad_threshold_order(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"warn \(0\.5\) must not exceed fail"):
        load_config(write(tmp_path, GOOD.replace("warn: 0.1", "warn: 0.5")))


def test_unknown_source_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'prod', which is not declared under data\.sources"):
        load_config(write(tmp_path, GOOD.replace("current: train", "current: prod")))


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(write(tmp_path, "version: 1\nproject: [unclosed\n"))
    assert info.value.line is not None


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_wrong_literal_lists_allowed_values(tmp_path: Path) -> None:
    text = GOOD + "  expectations:\n    columns:\n      amount: {type: decimal}\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "amount.type" in info.value.message
    assert info.value.hint and "'int'" in info.value.hint


def test_cli_reports_config_error_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, GOOD.replace("project: demo", "project: demo\nlnit: {}"))
    assert main(["lint", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    # Outside Actions: `file:line: error: message`, the location said once, relative to the working directory.
    assert captured.out.startswith(f"{path.name}:3: error: invalid key lnit: Extra inputs are not permitted")
    assert "Traceback" not in captured.out + captured.err
    assert "hint:" in captured.err


def test_schema_is_json_and_lists_keys() -> None:
    schema = json.loads(json_schema())
    assert set(schema["properties"]) >= {"version", "project", "lint", "data"}
    assert schema["additionalProperties"] is False


def test_published_schema_is_current() -> None:
    published = Path(__file__).resolve().parents[2] / "schema" / "mlgate.schema.json"
    assert json.loads(published.read_text()) == json.loads(json_schema()), "run `make schema`"


# The base of a config that only the rollout, registry and model-test keys below change.
DOMAIN_BASE = """\
version: 1
project: demo
data:
  sources: {train: {path: data/train.csv}}
model_tests:
  holdout: train
  label: y
"""


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("rollout: {thresholds: {decision_threshold: 1.5}}", "rollout.thresholds.decision_threshold"),
        ("rollout: {thresholds: {decision_threshold: -0.1}}", "rollout.thresholds.decision_threshold"),
        ("rollout: {thresholds: {max_score_diff: 2}}", "rollout.thresholds.max_score_diff"),
        ("rollout: {interval_s: .nan}", "rollout.interval_s"),
        ("rollout: {bake_s: .inf}", "rollout.bake_s"),
        ("rollout: {deadline_s: .inf}", "rollout.deadline_s"),
        ("rollout: {metrics: {timeout_s: .nan}}", "rollout.metrics.timeout_s"),
        ("traffic: {nginx: {ready_timeout_s: .nan}}", "traffic.nginx.ready_timeout_s"),
        ("registry: {promotion: {margin: 2}}", "registry.promotion.margin"),
        ("registry: {promotion: {guards: {pr_auc: -0.01}}}", "registry.promotion.guards.pr_auc"),
        ("compress: {budgets: {max_size_mb: .inf}}", "compress.budgets.max_size_mb"),
        ("compress: {budgets: {max_metric_drop: {roc_auc: .nan}}}", "compress.budgets.max_metric_drop.roc_auc"),
        ("train: {command: x, seed: -1}", "train.seed"),
        ("train: {command: x, repro_tolerance: .inf}", "train.repro_tolerance"),
    ],
)
def test_a_number_outside_its_domain_is_refused_at_load(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"invalid key {key}:")) as refused:
        load_config(write(tmp_path, DOMAIN_BASE + extra + "\n"))
    assert refused.value.hint and "mlgate schema" in refused.value.hint


@pytest.mark.parametrize(
    ("model_tests", "key"),
    [
        ("  threshold: 1.2\n", "model_tests.threshold"),
        ("  seed: 4294967296\n", "model_tests.seed"),
        ("  baseline: {model: m, max_regression: {roc_auc: .nan}}\n", "model_tests.baseline.max_regression.roc_auc"),
        ("  performance: {latency: [{batch: 1, p95_ms: .inf}]}\n", "model_tests.performance.latency[0].p95_ms"),
    ],
)
def test_a_model_test_number_outside_its_domain_is_refused(tmp_path: Path, model_tests: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"invalid key {key}")):
        load_config(write(tmp_path, DOMAIN_BASE + model_tests))


def test_nan_stays_a_value_a_behavioral_test_may_write_into_the_rows(tmp_path: Path) -> None:
    # A perturbation to missing or infinite values is a test of the model, not a bad setting.
    text = DOMAIN_BASE + (
        "  behavioral:\n"
        "    minimum_functionality: [{name: missing, set: {x: .nan}, expect: 0}]\n"
        "    invariance: [{name: inf, column: x, perturb: {replace: {0: .inf}}}]\n"
    )
    behavioral = load_config(write(tmp_path, text)).model.model_tests
    assert behavioral is not None
    assert math.isnan(float(behavioral.behavioral.minimum_functionality[0].set["x"]))


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen:
        return seen
    seen.add(model)
    for info in model.model_fields.values():
        for arg in [info.annotation, *typing.get_args(info.annotation)]:
            for inner in [arg, *typing.get_args(arg)]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    _models(inner, seen)
    return seen


def test_every_section_of_mlgate_yaml_refuses_nan_and_infinity() -> None:
    sections = _models(MlgateConfig, set())
    assert len(sections) > 30  # every nested section was found
    assert [model.__name__ for model in sections if model.model_config.get("allow_inf_nan") is not False] == []
