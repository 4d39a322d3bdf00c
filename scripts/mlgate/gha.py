"""Every byte mlgate writes to GitHub: outputs, step summary, annotations and the PR comment.

Each of them is redacted (mlgate.redaction) here, where it is written, so no caller has to.

Outside GitHub Actions the same calls render for a person: `path:line: level: message` instead of
workflow commands, plain-text tables instead of Markdown, a title line instead of a log group.
"""

from __future__ import annotations

import json
import os
import re
import sys
import unicodedata
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TextIO

from mlgate.redaction import redact, redact_value

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
    """Report a finding at a file and line, and return the line written.

    In GitHub Actions (and act, which sets GITHUB_ACTIONS too) a workflow command, which GitHub turns
    into an annotation: `::error file=..,line=..::msg`. Elsewhere the form compilers use,
    `path:line: error: msg`, which editors and terminals link to the file; the title is dropped there.
    """
    message = redact(message)
    title = redact(title) if title else title
    if not in_actions():
        text = _human_annotation(level, message, file=file, line=line, col=col)
        print(text, file=stream or sys.stdout, flush=True)
        return text
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


def _human_annotation(level: Level, message: str, *, file: str | None, line: int | None, col: int | None) -> str:
    if not file:
        return f"{level}: {message}"
    shown = cwd_relative(file)
    # Many messages already start with "<file>:<line>:" for the Actions log, where the annotation's
    # location is not printed; said once here.
    for prefix in dict.fromkeys((file, shown)):
        match = re.match(re.escape(prefix) + r"(?::(?:\d+|\?))?:\s*", message)
        if match:
            message = message[match.end() :]
            break
    where = shown + (f":{line}" if line else "") + (f":{col}" if line and col else "")
    return f"{where}: {level}: {message}"


def cwd_relative(path: str) -> str:
    """A path as a person at this terminal would type it: relative to the working directory when under it."""
    return _relative(path, Path.cwd())


def repo_relative(path: str) -> str:
    """A path as GitHub resolves annotation files: relative to the workspace (repository root)."""
    return _relative(path, Path(os.environ.get("GITHUB_WORKSPACE") or os.getcwd()))


def _relative(path: str, base: Path) -> str:
    """`path` relative to `base` when it lies under it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except (ValueError, OSError):
        return path


def set_output(name: str, value: str) -> None:
    """Append one output to $GITHUB_OUTPUT, using a heredoc delimiter so multi-line values are safe."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return
    value = redact(value)
    delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
    # A value containing the delimiter would end the heredoc early; a fresh uuid cannot collide.
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def add_summary(markdown: str) -> None:
    """Append Markdown to the job summary ($GITHUB_STEP_SUMMARY); as plain text on stderr when run by hand."""
    markdown = redact(markdown)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(markdown.rstrip("\n") + "\n\n")
    elif os.environ.get("MLGATE_SUMMARY_STDOUT", "1") == "1":
        print(markdown if in_actions() else plain_text(markdown), file=sys.stderr)


class group:
    """`::group::` ... `::endgroup::` around a long log, as a context manager; a title line outside Actions."""

    def __init__(self, title: str) -> None:
        self.title = redact(title)

    def __enter__(self) -> group:
        if in_actions():
            print(f"::group::{_escape_data(self.title)}", flush=True)
        else:
            print(f"==> {self.title}", flush=True)
        return self

    def __exit__(self, *_: object) -> None:
        if in_actions():
            print("::endgroup::", flush=True)


def set_outputs(outputs: Mapping[str, object], *, json_file: Path | None = None) -> None:
    """Set each step output, write them all to `json_file` as one JSON object, and print them outside Actions.

    A local run has no $GITHUB_OUTPUT: the file (and the printed `name: value` lines) is where a person
    or a script finds the run id or model URI instead of reading the log. In the file values keep their
    JSON types; as step outputs they are strings (booleans `true`/`false`, None empty, the rest JSON).
    """
    # Redacted value by value: in the JSON text a secret with a quote or backslash would be escaped past a match.
    outputs = redact_value(dict(outputs))
    for name, value in outputs.items():
        set_output(name, _output_text(value))
    written = False
    if json_file is not None:
        try:
            json_file.parent.mkdir(parents=True, exist_ok=True)
            json_file.write_text(json.dumps(dict(outputs), indent=2, sort_keys=True) + "\n", encoding="utf-8")
            written = True
        except OSError as exc:
            # The gate has run; a file it could not write must not turn its verdict into a traceback.
            annotation("warning", f"could not write the outputs file {json_file}: {exc.strerror or exc}")
    if not in_actions():
        for name, value in outputs.items():
            print(f"{name}: {_output_text(value)}")
        if written and json_file is not None:
            print(f"outputs file: {cwd_relative(str(json_file))}", flush=True)


def _output_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; pipes and newlines in cells are escaped so a cell cannot break the table."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Only the tags mlgate's own summaries use: text such as `models:/<model_id>` must survive.
_HTML_TAG = re.compile(r"</?(?:details|summary|sub|sup|b|i|em|strong|code|kbd|p|br)\b[^>]*>", re.IGNORECASE)
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=[^\s*])(.+?)(?<=[^\s*])\*\*")
_CODE = re.compile(r"`([^`]+)`")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def plain_text(markdown: str) -> str:
    """Markdown of a summary as a person reads it in a terminal.

    Tables become aligned columns; headings, bold, code spans, links, code fences and HTML tags or
    comments lose their markup; emoji stay (they carry the verdict).
    """
    out: list[str] = []
    table: list[list[str]] = []
    for raw in _HTML_COMMENT.sub("", markdown).splitlines():
        if _TABLE_ROW.match(raw):
            if not _TABLE_RULE.match(raw):
                cells = _CELL_SPLIT.split(raw.strip())[1:-1]
                table.append([_plain_inline(cell.strip()) for cell in cells])
            continue
        if table:
            out += _aligned(table)
            table = []
        if raw.lstrip().startswith("```"):
            continue
        heading = _HEADING.match(raw)
        line = _plain_inline(heading.group(1) if heading else raw)
        if not line.strip() and raw.strip():
            continue  # a line of markup only, such as </details>
        out.append(line.rstrip())
    if table:
        out += _aligned(table)
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out))
    return text.strip("\n")


def _plain_inline(text: str) -> str:
    tagged = _HTML_TAG.search(text) is not None
    text = _HTML_TAG.sub(" ", text)
    text = _LINK.sub(lambda m: m.group(1) if m.group(1) in (m.group(2), "") else f"{m.group(1)} ({m.group(2)})", text)
    text = _CODE.sub(r"\1", _BOLD.sub(r"\1", text)).replace("\\|", "|")
    # A removed tag leaves spaces where it stood; elsewhere the line's own indentation is kept.
    return re.sub(r" {2,}", " ", text).strip() if tagged else text


def _width(text: str) -> int:
    """Terminal columns of `text`: wide (East Asian, most emoji) count two, combining marks none."""
    width = 0
    previous = 0
    for char in text:
        if char == "\ufe0f":  # emoji presentation selector: the symbol before it is drawn two columns wide
            width += 1 if previous == 1 else 0
            previous = 2
            continue
        if unicodedata.combining(char) or char in "\u200d\ufe0e":
            continue
        previous = 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        width += previous
    return width


def _aligned(rows: list[list[str]]) -> list[str]:
    count = max(len(row) for row in rows)
    rows = [row + [""] * (count - len(row)) for row in rows]
    widths = [max(_width(row[index]) for row in rows) for index in range(count)]

    def render(row: list[str]) -> str:
        return "  ".join(cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(row)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return [render(rows[0]), rule, *(render(row) for row in rows[1:])]


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


def _comment_skipped_because(number: int | None, token: str | None, repo: str | None) -> str | None:
    """Why no PR comment can be posted, with how to get one; None when it can."""
    if not number:
        if not os.environ.get("GITHUB_EVENT_PATH"):
            return "not a pull request's workflow run (no GITHUB_EVENT_PATH); it is posted on pull_request events"
        event = os.environ.get("GITHUB_EVENT_NAME") or "this event"
        return f"{event} is not a pull request; the comment is posted on pull_request events only"
    if not token:
        return (
            "no token; pass the github-token input (default: github.token) or set GITHUB_TOKEN, "
            "and grant the job pull-requests: write"
        )
    if not repo:
        return "GITHUB_REPOSITORY is not set; it names the repository of the pull request"
    return None


def with_section(existing: str, section: str, body: str) -> str:
    """`existing` with the part between the markers of `section` replaced by `body` (appended when absent)."""
    start, end = f"<!-- mlgate-section:{section} -->", f"<!-- /mlgate-section:{section} -->"
    block = f"{start}\n{body}\n{end}"
    head, found, rest = existing.partition(start)
    if found and end in rest:
        return head + block + rest.split(end, 1)[1]
    return f"{existing.rstrip()}\n\n{block}"


def upsert_pr_comment(key: str, body: str, *, token: str | None = None, section: str | None = None) -> str | None:
    """Create or update (in place) the one PR comment carrying `marker(key)`; returns its URL.

    With `section`, `body` replaces only that section of the comment (another gate's report beside it
    stays), or is appended to it. Outside a pull request or without a token it posts nothing, says why
    in one notice, and returns None.
    """
    number = pr_number()
    token = token or os.environ.get("GITHUB_TOKEN")
    repo = os.environ.get("GITHUB_REPOSITORY")
    skipped = _comment_skipped_because(number, token, repo)
    if skipped:
        annotation("notice", f"PR comment not posted: {skipped}", title="mlgate PR comment")
        return None
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    tagged = f"{marker(key)}\n{redact(body)}"
    if section is not None:
        tagged = with_section(marker(key), section, redact(body))
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
                if section is not None:
                    tagged = with_section(str(comment["body"]), section, redact(body))
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
    "cwd_relative",
    "group",
    "in_actions",
    "marker",
    "md_table",
    "plain_text",
    "pr_number",
    "set_output",
    "set_outputs",
    "upsert_pr_comment",
    "urllib",
    "with_section",
]
