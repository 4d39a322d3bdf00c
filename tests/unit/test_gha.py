"""gha: outputs survive multi-line values, annotations escape, the PR comment is updated in place."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from mlgate import gha


def test_multiline_output_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    gha.set_output("report", "line one\nEOF\nline three")
    text = out.read_text()
    name, rest = text.split("<<", 1)
    delimiter, body = rest.split("\n", 1)
    assert name == "report"
    assert body == f"line one\nEOF\nline three\n{delimiter}\n"


@pytest.fixture
def in_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")


@pytest.fixture
def by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)


def test_annotation_escapes_message_and_properties(in_actions: None, capsys: pytest.CaptureFixture[str]) -> None:
    line = gha.annotation("error", "50% bad\nsecond", file="a,b:c.py", line=3, title="t")
    assert line == "::error file=a%2Cb%3Ac.py,line=3,title=t::50%25 bad%0Asecond"
    assert capsys.readouterr().out.strip() == line


def test_annotation_file_is_repo_relative(in_actions: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    line = gha.annotation("warning", "m", file=str(tmp_path / "proj" / "mlgate.yaml"), line=2)
    assert line.startswith("::warning file=proj/mlgate.yaml,line=2::")


def test_outside_actions_a_finding_reads_like_a_compiler_error(
    by_hand: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = str(tmp_path / "proj" / "mlgate.yaml")
    assert gha.annotation(
        "error", "F401: `os` unused", file=str(tmp_path / "src/m.py"), line=3, col=8, title="ruff"
    ) == ("src/m.py:3:8: error: F401: `os` unused")
    # Messages written for the Actions log often start with their own location: it is said once.
    said_once = gha.annotation("error", f"{config}:12: invalid key lnit", file=config, line=12)
    assert said_once == "proj/mlgate.yaml:12: error: invalid key lnit"
    assert gha.annotation("warning", "50% done", file="/elsewhere/x.yaml") == "/elsewhere/x.yaml: warning: 50% done"
    assert gha.annotation("notice", "no file") == "notice: no file"
    assert "::" not in capsys.readouterr().out


def test_outside_actions_a_summary_is_plain_text(by_hand: None, capsys: pytest.CaptureFixture[str]) -> None:
    markdown = "\n".join(
        [
            "<!-- mlgate:key -->",
            "### mlgate lint: ❌ lint failed",
            "",
            "- model: `models:/<model_id>` on **cpu**, run [abc](http://mlflow/#/runs/abc)",
            "",
            gha.md_table(["tool", "where", "result"], [["ruff", "`src/m.py:3`", "❌"], ["mypy", "`a|b`", "✅ ok"]]),
            "",
            "<details><summary>Lineage tags</summary>",
            "",
            "</details>",
        ]
    )
    gha.add_summary(markdown)
    assert capsys.readouterr().err.strip().splitlines() == [
        "mlgate lint: ❌ lint failed",
        "",
        "- model: models:/<model_id> on cpu, run abc (http://mlflow/#/runs/abc)",
        "",
        "tool  where       result",
        "----  ----------  ------",
        "ruff  src/m.py:3  ❌",
        "mypy  a|b         ✅ ok",
        "",
        "Lineage tags",
    ]


def test_in_actions_without_a_summary_file_the_markdown_is_kept(
    in_actions: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    gha.add_summary("### **x**\n\n" + gha.md_table(["a"], [["1"]]))
    assert capsys.readouterr().err.strip() == "### **x**\n\n| a |\n|---|\n| 1 |"


def test_group_is_a_title_line_outside_actions(by_hand: None, capsys: pytest.CaptureFixture[str]) -> None:
    with gha.group("dvc pull"):
        print("pulled")
    assert capsys.readouterr().out == "==> dvc pull\npulled\n"


def test_group_markers_in_actions(in_actions: None, capsys: pytest.CaptureFixture[str]) -> None:
    with gha.group("dvc pull"):
        print("pulled")
    assert capsys.readouterr().out == "::group::dvc pull\npulled\n::endgroup::\n"


def test_outputs_go_to_a_json_file_and_are_printed_by_hand(
    by_hand: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    outputs = {"model-uri": "models:/m-1", "metrics": {"auc": 0.9}, "reproducible": None, "passed": True}
    gha.set_outputs(outputs, json_file=tmp_path / "mlgate-outputs" / "train.json")
    assert json.loads((tmp_path / "mlgate-outputs" / "train.json").read_text()) == outputs
    assert capsys.readouterr().out.splitlines() == [
        "model-uri: models:/m-1",
        'metrics: {"auc": 0.9}',
        "reproducible: ",
        "passed: true",
        "outputs file: mlgate-outputs/train.json",
    ]


def test_outputs_in_actions_are_step_outputs_and_not_printed(
    in_actions: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out"))
    gha.set_outputs({"passed": False, "metrics": {"auc": 0.9}, "comment-url": None}, json_file=tmp_path / "o.json")
    text = (tmp_path / "out").read_text()
    assert "passed<<" in text and "\nfalse\n" in text and '\n{"auc": 0.9}\n' in text and "comment-url<<" in text
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "o.json").read_text())["passed"] is False


def test_md_table_escapes_pipes() -> None:
    table = gha.md_table(["a", "b"], [["x|y", "1\n2"]])
    assert table.splitlines()[2] == "| x\\|y | 1 2 |"


class _FakeIssues(BaseHTTPRequestHandler):
    """GitHub's issue-comment endpoints, enough for upsert_pr_comment."""

    comments: ClassVar[list[dict[str, object]]] = []

    def _reply(self, payload: object, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        size, page = int(query["per_page"][0]), int(query["page"][0])
        self._reply(self.comments[(page - 1) * size : page * size])

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        comment = {
            "id": len(self.comments) + 1,
            "body": body["body"],
            "html_url": f"c/{len(self.comments) + 1}",
        }
        self.comments.append(comment)
        self._reply(comment, 201)

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        comment_id = int(self.path.rsplit("/", 1)[1])
        for comment in self.comments:
            if comment["id"] == comment_id:
                comment["body"] = body["body"]
                self._reply(comment)
                return
        self._reply({}, 404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, object]]]:
    _FakeIssues.comments = [{"id": 99, "body": "someone else's comment", "html_url": "c/99"}]
    server = HTTPServer(("127.0.0.1", 0), _FakeIssues)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 5}}))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{server.server_port}")
    yield _FakeIssues.comments
    server.shutdown()
    server.server_close()


def test_pr_comment_created_once_then_updated_in_place(fake_api: list[dict[str, object]]) -> None:
    gha.upsert_pr_comment("data", "first")
    gha.upsert_pr_comment("data", "second")
    ours = [c for c in fake_api if gha.marker("data") in str(c["body"])]
    assert len(ours) == 1
    assert str(ours[0]["body"]).endswith("second")
    assert len(fake_api) == 2


def test_pr_comment_found_on_a_later_page(fake_api: list[dict[str, object]]) -> None:
    fake_api[:] = [{"id": i, "body": f"chatter {i}", "html_url": f"c/{i}"} for i in range(1, 151)]
    fake_api.append({"id": 151, "body": f"{gha.marker('data')}\nold", "html_url": "c/151"})
    assert gha.upsert_pr_comment("data", "new") == "c/151"
    assert len(fake_api) == 151
    assert str(fake_api[-1]["body"]).endswith("new")


def test_pr_comment_skipped_outside_pull_request_says_why(
    by_hand: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    assert gha.upsert_pr_comment("data", "x") is None
    assert capsys.readouterr().out == (
        "notice: PR comment not posted: not a pull request's workflow run (no GITHUB_EVENT_PATH); "
        "it is posted on pull_request events\n"
    )


def test_pr_comment_skipped_on_a_push_event_says_why(
    in_actions: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/heads/main"}))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_EVENT_NAME", "push")
    assert gha.upsert_pr_comment("data", "x", token="t") is None
    assert capsys.readouterr().out == (
        "::notice title=mlgate PR comment::PR comment not posted: push is not a pull request; "
        "the comment is posted on pull_request events only\n"
    )


def test_pr_comment_skipped_without_a_token_says_how_to_give_one(
    fake_api: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert gha.upsert_pr_comment("data", "x") is None
    out = capsys.readouterr().out
    assert out.startswith("::notice title=mlgate PR comment::PR comment not posted: no token; pass the github-token")
    assert "pull-requests: write" in out
    assert len(fake_api) == 1  # nothing posted
