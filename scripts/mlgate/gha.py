"""Every byte mlgate writes to GitHub: outputs, step summary, annotations and the PR comment."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Literal, TextIO

Level = Literal["error", "warning", "notice"]


def in_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def annotation(
    level: Level,
    message: str,
    *,
    file: str | None = None,
    line: int | None = None,
    col: int | None = None,
    title: str | None = None,
    stream: TextIO | None = None,
) -> str:
    """Write a workflow command (`::error file=..,line=..::msg`) and return it.

    Outside GitHub Actions the same line is still printed: it is readable, and act shows it.
    """
    props = []
    if file:
        props.append(f"file={_escape_property(repo_relative(file))}")
    if line:
        props.append(f"line={line}")
    if col:
        props.append(f"col={col}")
    if title:
        props.append(f"title={_escape_property(title)}")
    command = f"::{level}{' ' + ','.join(props) if props else ''}::{_escape_data(message)}"
    print(command, file=stream or sys.stdout, flush=True)
    return command


def repo_relative(path: str) -> str:
    """A path as GitHub resolves annotation files: relative to the workspace (repository root)."""
    base = Path(os.environ.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()
    try:
        return str(Path(path).resolve().relative_to(base))
    except ValueError:
        return path


def set_output(name: str, value: str) -> None:
    """Append one output to $GITHUB_OUTPUT, using a heredoc delimiter so multi-line values are safe."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return
    delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
    # A value containing the delimiter would end the heredoc early; a fresh uuid cannot collide.
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def add_summary(markdown: str) -> None:
    """Append Markdown to the job summary ($GITHUB_STEP_SUMMARY); to stderr when run by hand."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(markdown.rstrip("\n") + "\n\n")
    elif os.environ.get("MLGATE_SUMMARY_STDOUT", "1") == "1":
        print(markdown, file=sys.stderr)


class group:
    """`::group::` ... `::endgroup::` around a long log, as a context manager."""

    def __init__(self, title: str) -> None:
        self.title = title

    def __enter__(self) -> group:
        print(f"::group::{_escape_data(self.title)}", flush=True)
        return self

    def __exit__(self, *_: object) -> None:
        print("::endgroup::", flush=True)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; pipes and newlines in cells are escaped so a cell cannot break the table."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def marker(key: str) -> str:
    """The hidden HTML comment by which mlgate finds its own PR comment again."""
    return f"<!-- mlgate:{key} -->"


def pr_number() -> int | None:
    """The pull request number of the running event, if it is one."""
    event_path = os.environ.get("GITHUB_EVENT_PATH")
    if not event_path or not Path(event_path).is_file():
        return None
    event = json.loads(Path(event_path).read_text(encoding="utf-8"))
    number = (event.get("pull_request") or {}).get("number") or event.get("number")
    return int(number) if number else None


def upsert_pr_comment(key: str, body: str, *, token: str | None = None) -> str | None:
    """Create or update (in place) the one PR comment carrying `marker(key)`; returns its URL.

    Returns None, doing nothing, outside a pull request or without a token.
    """
    number = pr_number()
    token = token or os.environ.get("GITHUB_TOKEN")
    repo = os.environ.get("GITHUB_REPOSITORY")
    if not (number and token and repo):
        return None
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    tagged = f"{marker(key)}\n{body}"
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }

    def call(method: str, url: str, payload: dict[str, str] | None = None) -> object:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - API URL from the runner
            return json.loads(response.read() or b"null")

    page, per_page = 1, 100
    while True:
        comments = call("GET", f"{api}/repos/{repo}/issues/{number}/comments?per_page={per_page}&page={page}")
        if not isinstance(comments, list) or not comments:
            break
        for comment in comments:
            if isinstance(comment, dict) and marker(key) in str(comment.get("body", "")):
                updated = call("PATCH", f"{api}/repos/{repo}/issues/comments/{comment['id']}", {"body": tagged})
                return str(updated.get("html_url", "")) if isinstance(updated, dict) else None
        if len(comments) < per_page:
            break
        page += 1
    created = call("POST", f"{api}/repos/{repo}/issues/{number}/comments", {"body": tagged})
    return str(created.get("html_url", "")) if isinstance(created, dict) else None


__all__ = [
    "add_summary",
    "annotation",
    "group",
    "in_actions",
    "marker",
    "md_table",
    "pr_number",
    "set_output",
    "upsert_pr_comment",
    "urllib",
]
