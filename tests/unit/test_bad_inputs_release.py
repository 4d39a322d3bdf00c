"""The release half's bad-input suite: compress, registry, serve, traffic and rollout, with broken projects,
command lines and state read back, each run through the real `mlgate` in a subprocess and held to what
bad_inputs.check asserts. The figures are printed at the end."""

from __future__ import annotations

import json
import os
import socket

import pytest
from bad_inputs import (
    COMPRESS,
    CP,
    LAST,
    SQLITE,
    Case,
    Table,
    both,
    check,
    edit,
    model_tag,
    nothing,
    params,
    registered_pair,
    run_table,
    summary,
    traffic_hook,
    version_tag,
    write,
)

# A rollout's state file as a running controller writes it (the cases change one key).
STATE = {
    "id": "f1rst",
    "phase": "running",
    "pid": 2**22 + 12345,
    "host": socket.gethostname(),
    "canary": {"model": "fraud", "version": "1"},
}
MLMODEL_NO_LOADER = "flavors:\n  python_function:\n    loader_module: mlgate_no_such_loader\n"

CASES: list[Case] = [
    # --- mlgate compress ---
    Case("compress-no-section", (*CP, "--model", "models:/m-1", "--tracking-uri", SQLITE), nothing, 2, "compress"),
    Case("compress-no-model", (*CP, "--tracking-uri", SQLITE), edit(LAST, LAST + COMPRESS), 3, "no candidate model"),
    Case(
        "compress-unknown-method", ("check",), edit(LAST, LAST + "\ncompress: {methods: [zip]}"), 2, "compress.methods"
    ),
    Case(
        "compress-distill-without-student",
        (*CP, "--model", "models:/m-1", "--tracking-uri", SQLITE),
        edit(LAST, LAST + "\ncompress: {methods: [onnx, distill]}"),
        2,
        "compress.distill",
    ),
    Case(
        "compress-model-missing",
        (*CP, "--model", "models:/m-0123", "--tracking-uri", SQLITE),
        edit(LAST, LAST + COMPRESS),
        3,
        "models:/m-0123",
    ),
    Case(
        "compress-junit-dir-is-a-file",  # --junit-dir is a folder (test-model's report folder is fine)
        (*CP, "--model", "models:/m-0123", "--junit-dir", "notes.txt", "--tracking-uri", SQLITE),
        both(edit(LAST, LAST + COMPRESS), write("notes.txt", "x")),
        3,
        "--junit-dir notes.txt: is a file, not a folder",
    ),
    Case(
        "compress-budget-not-a-number",
        ("check",),
        edit(LAST, LAST + "\ncompress: {budgets: {max_size_mb: small}}"),
        2,
        "max_size_mb",
    ),
    Case(
        "compress-loader-module-missing",  # the worker's own traceback before
        (*CP, "--model", "model", "--tracking-uri", SQLITE),
        both(edit(LAST, LAST + COMPRESS), write("model/MLmodel", MLMODEL_NO_LOADER)),
        3,
        "model: its MLmodel file names flavors.python_function.loader_module 'mlgate_no_such_loader'",
    ),
    # --- mlgate registry ---
    Case("registry-no-operation", ("registry", "--tracking-uri", SQLITE), nothing, 3, "no registry operation"),
    Case("registry-model-missing", ("registry", "promote", "--tracking-uri", SQLITE), nothing, 3, "does not exist"),
    Case(
        "registry-evidence-not-json",
        ("registry", "register", "--model-uri", "models:/m-1", "--evidence", "{x", "--tracking-uri", SQLITE),
        nothing,
        3,
        "--evidence",
    ),
    Case(
        "registry-not-a-model-uri",
        ("registry", "register", "--model-uri", "runs:/r1/model", "--tracking-uri", SQLITE),
        nothing,
        3,
        "models:/<model_id>",
    ),
    Case(
        "registry-reserved-alias",
        ("registry", "status", "--tracking-uri", SQLITE),
        edit("label: y", "label: y\n  baseline: {model: stub, alias: v1}"),
        2,
        "reserved",
    ),
    Case(
        "registry-lock-time-not-a-number",
        ("registry", "promote", "--tracking-uri", SQLITE),
        both(registered_pair, model_tag("mlgate.lock", '{"id": "x", "operation": "promote", "at": "soon"}')),
        3,
        "the tag mlgate.lock is not one mlgate wrote (its time 'soon' is not a number)",
    ),
    Case(
        "registry-intent-not-json",
        ("registry", "status", "--tracking-uri", SQLITE),
        both(registered_pair, model_tag("mlgate.intent", "{half")),
        3,
        "the tag mlgate.intent is not one mlgate wrote (not JSON",
    ),
    Case(
        "registry-recorded-metric-not-a-number",
        ("registry", "promote", "--tracking-uri", SQLITE),
        both(registered_pair, version_tag("2", "mlgate.metrics", '{"candidate": {"roc_auc": "high"}}')),
        3,
        "version 2's tag mlgate.metrics.candidate.roc_auc is 'high', not a number",
    ),
    Case(
        "registry-evidence-metric-not-a-number",
        (
            "registry",
            "register",
            "--model-uri",
            "models:/m-1",
            "--tracking-uri",
            SQLITE,
            "--evidence",
            '{"model_tests": {"metrics": {"champion": {"roc_auc": [0.9]}}}}',
        ),
        nothing,
        3,
        "--evidence's model_tests.metrics.champion.roc_auc is '[0.9]', not a number",
    ),
    Case(
        "registry-server-down",
        ("registry", "status", "--tracking-uri", "http://127.0.0.1:9"),
        nothing,
        4,
        "127.0.0.1:9",
    ),
    # --- mlgate traffic ---
    Case(
        "traffic-weight-out-of-range",
        ("traffic", "set", "--canary", "120"),
        traffic_hook("true"),
        3,
        "canary weight 120",
    ),
    Case(
        "traffic-weights-not-100",
        ("traffic", "set", "--stable", "80", "--canary", "30"),
        traffic_hook("true"),
        3,
        "sum to 110, not 100",
    ),
    Case(
        "traffic-hook-fails",  # its output quotes the password: the message carries it, redacted
        ("traffic", "set", "--canary", "10"),
        traffic_hook("sh -c 'echo cannot patch, password $MLFLOW_TRACKING_PASSWORD; exit 7' set-weights"),
        4,
        "failed with exit code 7",
    ),
    Case(
        "traffic-hook-hangs",
        ("traffic", "set", "--canary", "10"),
        traffic_hook("sh -c 'sleep 60' set-weights"),
        4,
        "did not finish within 1 s",
    ),
    Case("traffic-no-stack-up", ("traffic", "set", "--canary", "10"), nothing, 3, "no traffic stack is up"),
    Case(
        "traffic-nginx-missing",
        ("traffic", "up", "--stable", "models:/m@champion", "--canary", "models:/m@challenger"),
        nothing,
        4,
        "nginx is not installed",
        env={"PATH": "/nonexistent"},
    ),
    Case(
        "traffic-nginx-missing-before-install",  # checked before the serving venv is built: nothing installed
        ("traffic", "up", "--stable", "models:/m@champion", "--canary", "models:/m@challenger"),
        edit(LAST, LAST + "\nenvironment: {install: [mlgate-no-such-package-3c1]}"),
        4,
        "nginx is not installed",
        env={"PATH": "/nonexistent"},
    ),
    Case(
        "traffic-unknown-backend",
        ("traffic", "status"),
        edit(LAST, LAST + "\ntraffic: {backend: istio}"),
        2,
        "traffic.backend",
    ),
    # --- mlgate rollout ---
    Case(
        "rollout-steps-not-increasing",
        ("rollout", "status"),
        edit(LAST, LAST + "\nrollout: {steps: [5, 1, 100]}"),
        2,
        "must increase",
    ),
    Case(
        "rollout-step-over-100",
        ("rollout", "status"),
        edit(LAST, LAST + "\nrollout: {steps: [50, 120]}"),
        2,
        "each is the canary's percent, from 1 to 100",
    ),
    Case(
        "rollout-bake-below-interval",
        ("rollout", "status"),
        edit(LAST, LAST + "\nrollout: {interval_s: 10, bake_s: 5}"),
        2,
        "bake_s 5 is shorter than interval_s 10",
    ),
    Case(
        "rollout-threshold-out-of-domain",
        ("rollout", "status"),
        edit(LAST, LAST + "\nrollout: {thresholds: {max_error_rate: 1.5}}"),
        2,
        "max_error_rate",
    ),
    Case(
        "rollout-second-while-running",
        ("rollout", "start", "--version", "2", "--tracking-uri", SQLITE),
        write(
            ".mlgate/rollout/state.json",
            json.dumps(
                {
                    "id": "f1rst",
                    "phase": "running",
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "canary": {"model": "fraud", "version": "1"},
                    "step": {"name": "5%"},
                }
            ),
        ),
        3,
        "a rollout is already running: rollout f1rst of fraud version 1",
    ),
    Case(
        "rollout-no-registered-model",
        ("rollout", "start", "--tracking-uri", SQLITE),
        nothing,
        3,
        "registered model",
    ),
    Case(
        "rollout-nothing-served",
        ("rollout", "start", "--version", "2", "--tracking-uri", SQLITE),
        registered_pair,
        3,
        "the canary needs both versions served, and no traffic stack is up",
    ),
    # --- state mlgate reads back, and config domains of the rollout ---
    Case(
        "rollout-state-pid-not-a-number",
        ("rollout", "status"),
        write(".mlgate/rollout/state.json", json.dumps({**STATE, "pid": "12x"})),
        3,
        ".mlgate/rollout/state.json: key pid: Input should be a valid integer",
    ),
    Case(
        "rollout-state-canary-not-an-object",
        ("rollout", "start", "--version", "2", "--tracking-uri", SQLITE),
        write(".mlgate/rollout/state.json", json.dumps({**STATE, "canary": "fraud v1"})),
        3,
        ".mlgate/rollout/state.json: key canary: Input should be a JSON object",
    ),
    Case(
        "rollout-state-step-wrong-type",
        ("rollout", "abort"),
        both(traffic_hook("true"), write(".mlgate/rollout/state.json", json.dumps({**STATE, "step": "5%"}))),
        3,
        ".mlgate/rollout/state.json: key step: Input should be a JSON object",
    ),
    Case(
        "rollout-state-not-json",
        ("rollout", "abort"),
        both(traffic_hook("true"), write(".mlgate/rollout/state.json", "{running")),
        3,
        ".mlgate/rollout/state.json: the state file is not JSON",
    ),
    Case(
        "rollout-leftovers-note-wrong-type",
        ("rollout", "abort"),
        both(traffic_hook("true"), write(".mlgate/rollout/started.json", '{"pid": 1, "host": "h", "load": []}')),
        3,
        "started.json: key load: Input should be a JSON object",
    ),
    Case(
        "rollout-decision-threshold-out-of-domain",
        ("rollout", "status"),
        edit(LAST, LAST + "\nrollout: {thresholds: {decision_threshold: 1.5}}"),
        2,
        "rollout.thresholds.decision_threshold",
    ),
    Case(
        "rollout-deadline-infinite",
        ("rollout", "status"),
        edit(LAST, LAST + "\nrollout: {deadline_s: .inf}"),
        2,
        "rollout.deadline_s: Input should be a finite number",
    ),
    Case(
        "rollout-interval-nan",
        ("rollout", "status"),
        edit(LAST, LAST + "\nrollout: {interval_s: .nan}"),
        2,
        "rollout.interval_s",
    ),
]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Table:
    return run_table(CASES, tmp_path_factory.mktemp("bad-inputs-release"))


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input_is_one_error_with_a_hint(case: Case, table: Table) -> None:
    check(case, table.outcomes[case.id])


def test_the_repository_is_untouched(table: Table) -> None:
    before, after = table.repo_status
    assert after == before


def test_summary(table: Table, capsys: pytest.CaptureFixture[str]) -> None:
    summary("bad inputs (release half)", "bad_inputs_release", CASES, table, capsys)
