"""No secret reaches any channel mlgate writes to: canary secrets are planted in the environment and the
tracking URI, each channel is driven, and the canaries must never appear while `***` does."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlgate import cli, gha, procio, redaction
from mlgate.errors import ToolError

URI_PASSWORD = "canary-pw-7f3a"
URI = f"http://alice:{URI_PASSWORD}@127.0.0.1:9/"  # port 9 (discard): nothing listens
TOKEN = "canary-token-91b2"
MLFLOW_PASSWORD = "canary-mlpw-44aa"
GITHUB_TOKEN = "canary-gh-5c0d"
DVC_PASSWORD = "canary-dvc-2e8f"
CANARIES = (URI_PASSWORD, TOKEN, MLFLOW_PASSWORD, GITHUB_TOKEN, DVC_PASSWORD)


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets a job has in its environment; not registered yet (the CLI or the test does that)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", URI)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)
    monkeypatch.setenv("DVC_REMOTE_STORE_PASSWORD", DVC_PASSWORD)
    for name in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_EVENT_PATH"):
        monkeypatch.delenv(name, raising=False)


def leaked(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


def everything() -> str:
    """Every canary in one text, as a careless message would quote them."""
    return (
        f"View run r at: {URI}#/experiments/1; token {TOKEN}; password {MLFLOW_PASSWORD}; "
        f"github {GITHUB_TOKEN}; dvc {DVC_PASSWORD}"
    )


# --- the registry ---


def test_registered_values_and_uri_user_info_are_replaced(canaries: None) -> None:
    redaction.register_environment()
    text = redaction.redact(everything() + " and ssh://bob:unregistered-pw@example.com/x")
    assert leaked(text) == []
    assert "unregistered-pw" not in text  # any scheme://user:pass@, registered or not
    assert "http://***@127.0.0.1:9/#/experiments/1" in text
    assert "ssh://***@example.com/x" in text


def test_short_and_flag_like_values_are_not_registered_so_text_is_not_mangled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_API_TOKEN", "abc")
    monkeypatch.setenv("FEATURE_SECRET", "true")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-positive")  # TOKENIZERS is not the word TOKEN
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "mlflow")  # a user name is no secret: "mlflow" must stay
    redaction.register_environment()
    assert redaction.secrets() == frozenset()
    text = "abc: true, false-positive; logged to mlflow"
    assert redaction.redact(text) == text


def test_uri_credentials_are_registered_as_written_and_decoded() -> None:
    redaction.register_uri("https://bob:p%40ss-w0rd-long@mlflow.example.com/?token=q-value-123")
    assert redaction.redact("sent p@ss-w0rd-long and p%40ss-w0rd-long") == "sent *** and ***"
    assert redaction.redact("query token=q-value-123") == "query ***"


def test_a_secret_written_in_pieces_is_still_redacted() -> None:
    redaction.register(TOKEN)
    out = io.StringIO()
    stream = redaction.wrap(out)
    print("token:", TOKEN[:6], end="", file=stream)
    print(TOKEN[6:], file=stream)
    stream.write("no newline " + TOKEN)
    stream.flush()
    assert out.getvalue() == "token: ***\nno newline ***"


# --- ::add-mask:: ---


def test_add_mask_is_emitted_once_per_uri_credential_in_actions(
    canaries: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code = cli.main(["check", "--config", str(tmp_path / "missing.yaml")])
    out = capsys.readouterr().out
    assert code == 2
    lines = out.splitlines()
    # The URI's password is news to the runner; the variables named like secrets came from `secrets.*`
    # or the runner itself, which masks them already (and act would echo a runner token in clear).
    assert lines.count(f"::add-mask::{URI_PASSWORD}") == 1, out
    for secret in (TOKEN, MLFLOW_PASSWORD, GITHUB_TOKEN, DVC_PASSWORD):
        assert f"::add-mask::{secret}" not in out, out
    assert redaction.secrets() >= set(CANARIES)  # all of them redacted in mlgate's own output all the same
    # Before anything else was printed, so the runner masks it from the first line on.
    first_other = next(i for i, line in enumerate(lines) if not line.startswith("::add-mask::"))
    assert all(not line.startswith("::add-mask::") for line in lines[first_other:])
    assert "::error" in out
    assert redaction.register(URI_PASSWORD) is False  # already known: no second ::add-mask::
    assert "::add-mask::" not in capsys.readouterr().out


def test_no_add_mask_outside_actions(canaries: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cli.main(["check", "--config", str(tmp_path / "missing.yaml")])
    out = capsys.readouterr()
    assert "add-mask" not in out.out + out.err
    assert redaction.secrets() >= set(CANARIES)  # registered all the same: mlgate's own output is redacted


# --- annotations, the hint and every print through cli.main ---


def test_an_unreachable_tracking_uri_with_user_info_is_annotated_without_it(
    canaries: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "mlgate.yaml").write_text(
        f"version: 1\nproject: p\ntrain:\n  command: {sys.executable} -c pass\n  profiles: {{quick: {{}}}}\n"
    )
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("MLGATE_MLFLOW_ATTEMPTS", "1")
    code = cli.main(["train", "--config", str(tmp_path / "mlgate.yaml"), "--tracking-uri", URI])
    out = capsys.readouterr()
    assert code == 4, out
    errors = [line for line in out.out.splitlines() if line.startswith("::error")]
    assert errors and "http://***@127.0.0.1:9/" in errors[0]
    assert f"::add-mask::{URI_PASSWORD}" in out.out.splitlines()
    shown = [line for line in (out.out + out.err).splitlines() if not line.startswith("::add-mask::")]
    assert leaked("\n".join(shown)) == [], shown


def test_a_gate_that_quotes_secrets_is_redacted_in_its_error_hint_and_prints(
    canaries: None, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import mlgate.commands.check as check_command

    def careless(_args: object) -> int:
        print("connecting to", URI)  # in pieces, as print writes them
        sys.stderr.write(f"debug: token={TOKEN}\n")
        raise ToolError(f"server said no: {everything()}", hint=f"retry with {GITHUB_TOKEN}")

    monkeypatch.setattr(check_command, "run", careless)
    for actions in ("true", ""):
        monkeypatch.setenv("GITHUB_ACTIONS", actions)
        assert cli.main(["check"]) == 4
        out = capfd.readouterr()
        shown = "\n".join(line for line in (out.out + out.err).splitlines() if not line.startswith("::add-mask::"))
        assert leaked(shown) == [], shown
        assert "connecting to http://***@127.0.0.1:9/" in shown
        assert "debug: token=***" in shown
        assert "hint: retry with ***" in shown
        assert ("::error title=mlgate check::server said no" if actions else "error: server said no") in shown


def test_an_unexpected_traceback_is_redacted(canaries: None, capfd: pytest.CaptureFixture[str]) -> None:
    redaction.register_environment()
    try:
        raise RuntimeError(f"boom at {URI} with {TOKEN}")
    except RuntimeError as exc:
        cli._redacted_excepthook(RuntimeError, exc, exc.__traceback__)
    err = capfd.readouterr().err
    assert "RuntimeError: boom at http://***@127.0.0.1:9/ with ***" in err
    assert leaked(err) == []


# --- summaries, outputs, the PR comment ---


def test_summary_is_redacted_in_the_file_and_on_the_terminal(
    canaries: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    redaction.register_environment()
    gha.add_summary(f"### failed\n\n| what | detail |\n|---|---|\n| log | {everything()} |")
    err = capsys.readouterr().err
    assert leaked(err) == [] and "***" in err
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    gha.add_summary(f"```text\n{everything()}\n```")
    assert leaked(summary.read_text()) == [] and "***" in summary.read_text()


def test_outputs_file_step_outputs_and_printed_outputs_are_redacted(
    canaries: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    quoted = 'canary"quote\\7d1e'  # JSON escapes it: only redacting the values (not the JSON text) finds it
    redaction.register_environment()
    redaction.register(quoted)
    outputs = {"model-uri": URI + "models/m-1", "metrics": {"note": f"{TOKEN} {quoted}"}, TOKEN: "key"}
    json_file = tmp_path / "outputs.json"
    gha.set_outputs(outputs, json_file=json_file)
    written = json_file.read_text()
    printed = capsys.readouterr().out
    for text in (written, printed):
        assert leaked(text) == [] and "canary" not in text, text
    assert json.loads(written) == {
        "model-uri": "http://***@127.0.0.1:9/models/m-1",
        "metrics": {"note": "*** ***"},
        "***": "key",
    }
    step_outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(step_outputs))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    gha.set_outputs(outputs)
    assert "canary" not in step_outputs.read_text() and "***" in step_outputs.read_text()


class _FakeGitHub:
    def __init__(self) -> None:
        self.requests: list[urllib.request.Request] = []

    def urlopen(self, request: urllib.request.Request, timeout: float = 0) -> io.BytesIO:
        self.requests.append(request)
        return io.BytesIO(b"[]" if request.get_method() == "GET" else b'{"html_url": "https://example/c/1"}')


def test_pr_comment_body_is_redacted_and_the_token_still_authenticates(
    canaries: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    redaction.register_environment()
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")
    fake = _FakeGitHub()
    monkeypatch.setattr(gha.urllib.request, "urlopen", fake.urlopen)
    assert gha.upsert_pr_comment("k", f"results: {everything()}") == "https://example/c/1"
    posted = fake.requests[-1]
    assert posted.get_method() == "POST" and isinstance(posted.data, bytes)
    body = json.loads(posted.data)["body"]
    assert leaked(body) == [] and "http://***@127.0.0.1:9/" in body
    assert posted.get_header("Authorization") == f"Bearer {GITHUB_TOKEN}"  # redaction is for what is shown


# --- a child's output and the log mlgate uploads ---

CHILD = """
import os
print("View run r at: " + os.environ["MLFLOW_TRACKING_URI"] + "#/experiments/1/runs/r")
print("token", os.environ["MLFLOW_TRACKING_TOKEN"], "dvc", os.environ["DVC_REMOTE_STORE_PASSWORD"])
print("last words " + os.environ["GITHUB_TOKEN"], end="")
"""


def test_child_output_is_redacted_on_the_terminal_in_the_log_and_in_the_tail(
    canaries: None, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import os

    redaction.register_environment()
    log_path = tmp_path / "train.log"
    code, tail, _ = procio.stream([sys.executable, "-c", CHILD], tmp_path, dict(os.environ), log_path, hint="")
    out = capfd.readouterr()
    assert code == 0
    log = log_path.read_text()
    for text in (out.out + out.err, log, "\n".join(tail)):
        assert leaked(text) == [], text
    assert "View run r at: http://***@127.0.0.1:9/#/experiments/1/runs/r" in log
    assert "token *** dvc ***" in log and log.endswith("last words ***")


TRAIN_SCRIPT = """
import os
import mlflow
with mlflow.start_run():
    mlflow.log_metric("holdout_auc", 0.5)
print("View run at: http://alice:" + os.environ["CANARY_URI_PASSWORD"] + "@127.0.0.1:9/#/runs/x")
print("password", os.environ["MLFLOW_TRACKING_PASSWORD"], "token", os.environ["MLFLOW_TRACKING_TOKEN"])
"""


def test_train_log_uploaded_to_mlflow_has_no_secret(
    canaries: None, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A real training run against a sqlite store: the secrets reach the command's environment, as MLflow's
    # client needs them, and the command prints them, as MLflow's "View run ... at" line does.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("CANARY_URI_PASSWORD", URI_PASSWORD)
    redaction.register_uri(URI)  # as `mlgate train --tracking-uri` against that server would
    (tmp_path / "train_stub.py").write_text(TRAIN_SCRIPT)
    (tmp_path / "mlgate.yaml").write_text(
        f"version: 1\nproject: p\ntrain:\n  command: {sys.executable} train_stub.py\n"
        "  profiles: {quick: {}}\n  device: cpu\n  metrics: [holdout_auc]\n  log_model: false\n"
    )
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = cli.main(["train", "--config", "mlgate.yaml", "--tracking-uri", store, "--outputs-file", "out.json"])
    out = capfd.readouterr()
    assert code == 0, out
    assert leaked(out.out + out.err) == []
    from mlflow import MlflowClient

    run_id = json.loads((tmp_path / "out.json").read_text())["run-id"]
    log = Path(MlflowClient(tracking_uri=store).download_artifacts(run_id, "mlgate/train.log", str(tmp_path)))
    uploaded = log.read_text()
    assert leaked(uploaded) == [], uploaded
    assert "View run at: http://***@127.0.0.1:9/#/runs/x" in uploaded
    assert "password *** token ***" in uploaded
