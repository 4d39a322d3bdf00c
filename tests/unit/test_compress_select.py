"""The compress gate's decisions that need no model: quantization mode, ranking, budgets, the PR comment section."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from mlgate import gha
from mlgate.commands.compress import render
from mlgate.compress import SELECTED_TAG, Attempt, CompressResult, record, sort_key, within_budgets
from mlgate.compress.export import unsupported_op
from mlgate.compress.quantize import choose_mode
from mlgate.config import CompressConfig
from mlgate.extras import compress_libraries
from mlgate.mlflowio import MlflowHandle


def test_auto_mode_is_static_for_convolutions_dynamic_for_matmul_and_none_without_either() -> None:
    assert choose_mode(Counter({"Conv": 2, "Gemm": 1, "Relu": 3}), "auto")[0] == "static"
    mode, why = choose_mode(Counter({"Gemm": 3, "Relu": 2}), "auto")
    assert mode == "dynamic" and "3 MatMul/Gemm and no Conv" in why
    mode, why = choose_mode(Counter({"LinearClassifier": 1, "Scaler": 1}), "auto")
    assert mode is None and "LinearClassifier" in why and "nothing to quantize" in why
    assert choose_mode(Counter({"Conv": 1}), "dynamic") == (
        "dynamic",
        "compress.quantize.mode is dynamic (1 Conv, 0 MatMul/Gemm)",
    )


def test_the_operator_is_read_out_of_each_exporter_error() -> None:
    dynamo = RuntimeError("No ONNX function found for <OpOverload(op='prims.bessel_j0', overload='default')>.")
    script = RuntimeError("Exporting the operator 'aten::fft_rfft' to ONNX opset version 20 is not supported")
    assert unsupported_op(dynamo) == "prims.bessel_j0"
    assert unsupported_op(script) == "aten::fft_rfft"
    assert unsupported_op(RuntimeError("something else")) is None


def variant(name: str, size: int, p95: float, budgets: list[bool], **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "methods": [name], "model_uri": f"models:/m-{name}", "candidate": True, "notes": [],
        "size_bytes": size, "size_mb": size / 1e6, "parameters": 10, "weight_bytes": size,
        "metrics": {"roc_auc": 0.8}, "metric_deltas": {"roc_auc": -0.001}, "max_abs_diff": 0.01,
        "flip_rate": 0.0, "flipped_rows": 0,
        "latency": {"1000": {"pyfunc": {"p50_ms": p95 / 2, "p95_ms": p95}, "onnxruntime": {"p50_ms": 1, "p95_ms": 2}}},
        "budgets": [{"budget": f"b{i}", "value": 0, "passed": ok} for i, ok in enumerate(budgets)],
        **extra,
    }  # fmt: skip


def test_candidates_rank_smallest_then_fastest_and_a_budget_miss_excludes() -> None:
    settings = CompressConfig.model_validate({"budgets": {"latency": {"batch": 1000, "p95_ms": 50}}})
    variants = [
        variant("a", 5000, 3.0, [True]),
        variant("b", 4000, 9.0, [True]),
        variant("c", 4000, 2.0, [True]),
        variant("d", 1000, 1.0, [True, False]),
    ]
    ranked = sorted((v for v in variants if within_budgets(v)), key=lambda v: sort_key(v, settings))
    assert [v["name"] for v in ranked] == ["c", "b", "a"]


def test_the_worker_libraries_follow_what_the_project_venv_holds() -> None:
    settings = CompressConfig.model_validate({"methods": ["onnx", "int8", "prune"]})
    torch_only = compress_libraries(settings.methods, {"torch": True, "sklearn": False})
    assert any(r.startswith("onnxscript") for r in torch_only) and any(
        r.startswith("torch-pruning") for r in torch_only
    )
    assert not any(r.startswith("skl2onnx") for r in torch_only)
    # A scikit-learn team never gets torch-pruning, which would pull torch (a multi-GB CUDA build) into its venv.
    sklearn_only = compress_libraries(settings.methods, {"torch": False, "sklearn": True})
    assert any(r.startswith("skl2onnx") for r in sklearn_only)
    assert not any(r.startswith(("torch-pruning", "onnxscript")) for r in sklearn_only)


def test_a_section_replaces_itself_and_keeps_the_rest_of_the_comment() -> None:
    head = "<!-- mlgate:test-model:p -->\n### test-model results"
    once = gha.with_section(head, "compress", "table v1")
    assert once.startswith(head) and "table v1" in once
    twice = gha.with_section(once, "compress", "table v2")
    assert "table v1" not in twice and twice.count("table v2") == 1 and twice.startswith(head)


@pytest.fixture
def report() -> dict[str, Any]:
    return {
        "candidate": "models:/m-orig", "kind": "torch", "threads": 1, "threshold": 0.07, "holdout_rows": 100,
        "run_id": "r1", "budgets": {"latency": {"batch": 1000, "p95_ms": 50}},
        "original": {"parameters": 1281, "metrics": {"roc_auc": 0.8}, "latency": {}, "pinned": ["torch"]},
        "variants": [
            variant("onnx-fp32", 13000, 3.0, [True]),
            variant("onnx-int8", 8000, 3.0, [True], model_tests="failed: behavioral.invariance[0]"),
            variant("distilled-int8", 5000, 3.0, [False]),
        ],
        "notes": ["prune: skipped"],
    }  # fmt: skip


def test_the_table_names_the_selected_variant_the_failed_tests_and_the_missed_budgets(report: dict[str, Any]) -> None:
    result = CompressResult(report=report, selected=report["variants"][0])
    result.attempts = [Attempt("onnx-int8", "models:/m-onnx-int8", False, ["behavioral.invariance[0]"])]
    body = render(result)
    assert body.startswith("### mlgate compress: ✅ selected `onnx-fp32`")
    assert "⭐ selected" in body and "failed: behavioral.invariance[0]" in body
    assert "❌ b0" in body  # distilled-int8 missed its budget
    assert "1.6x smaller" in body  # 13000 / 8000
    assert "prune: skipped" in body
    none = render(CompressResult(report=report))
    assert none.startswith("### mlgate compress: ❌ no variant qualifies")


def test_recording_the_selection_retries_a_call_the_server_fails_once(
    report: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLGATE_MLFLOW_ATTEMPTS", raising=False)
    monkeypatch.setenv("MLGATE_MLFLOW_BACKOFF_S", "0.01")
    written: list[tuple[str, ...]] = []

    class FlakyClient:
        blips = 1

        def set_logged_model_tags(self, model_id: str, tags: dict[str, str]) -> None:
            written.append(("model", model_id, *(f"{key}={value}" for key, value in tags.items())))

        def set_tag(self, run_id: str, key: str, value: str) -> None:
            if self.blips:
                self.blips -= 1
                raise ConnectionError("connection reset by peer")
            written.append(("run", run_id, f"{key}={value}"))

        def log_dict(self, run_id: str, data: dict[str, Any], path: str) -> None:
            written.append(("report", run_id, path, str(len(data["attempts"]))))

    result = CompressResult(report=report, selected=report["variants"][0])
    result.attempts = [Attempt("onnx-fp32", "models:/m-onnx-fp32", True)]
    record(result, MlflowHandle(FlakyClient(), "http://mlflow.example:5000"))
    assert written == [
        ("model", "m-onnx-fp32", f"{SELECTED_TAG}=true"),
        ("run", "r1", f"{SELECTED_TAG}=onnx-fp32"),
        ("report", "r1", "compress/report.json", "1"),
    ]
    assert "tagging the compress run failed (attempt 1/4), retrying" in capsys.readouterr().out
