"""`mlgate registry register` run by hand after compress or test-model in the same project: the evidence those
runs wrote is the one registered, when the model is theirs."""

from __future__ import annotations

import json
from pathlib import Path

from mlgate.commands.registry import recorded_evidence
from mlgate.registry.operations import Evidence


def _write(root: Path, name: str, outputs: object) -> None:
    path = root / "mlgate-outputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outputs), encoding="utf-8")


def test_the_compressed_models_evidence_is_read_before_the_tested_ones(tmp_path: Path) -> None:
    tests = {"passed": True, "promotable": True}
    _write(tmp_path, "test-model.json", {"model-uri": "models:/m-source", "evidence": {"model_tests": tests}})
    compressed = {"model_tests": tests, "compress": {"variant": "onnx-fp32", "source": "models:/m-source"}}
    _write(tmp_path, "compress.json", {"model-uri": "models:/m-onnx", "evidence": compressed})

    raw, source = recorded_evidence(tmp_path, "models:/m-onnx")
    assert source == tmp_path / "mlgate-outputs" / "compress.json"
    assert Evidence.parse(raw).compress == compressed["compress"]

    raw, source = recorded_evidence(tmp_path, "models:/m-source")  # registered without its compression
    assert source == tmp_path / "mlgate-outputs" / "test-model.json"
    assert Evidence.parse(raw).model_tests == tests


def test_another_models_evidence_or_a_broken_file_is_not_taken(tmp_path: Path) -> None:
    _write(tmp_path, "compress.json", {"model-uri": "models:/m-other", "evidence": {"model_tests": {}}})
    (tmp_path / "mlgate-outputs" / "test-model.json").write_text("{not json", encoding="utf-8")
    assert recorded_evidence(tmp_path, "models:/m-mine") == (None, None)
    assert recorded_evidence(tmp_path / "absent", "models:/m-mine") == (None, None)
