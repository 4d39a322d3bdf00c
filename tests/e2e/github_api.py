"""Stand-in for GitHub's hosted REST API: end-to-end tests read back a workflow's PR comment, and
`mlgate github setup` is tested against its repository-settings endpoints (tests/e2e/github_repo_settings.py)."""

from __future__ import annotations

import copy
import hmac
import itertools
import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.e2e.github_repo_settings import RepoSettings

# GitHub's defaults for list endpoints: 30 per page unless asked, never more than 100.
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100

_LIST_OR_CREATE = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/(?P<number>\d+)/comments$")
_ONE_COMMENT = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/comments/(?P<id>\d+)$")
_APPROVALS = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/actions/runs/(?P<run_id>\d+)/approvals$")
_AUTHORIZATION = re.compile(r"^(?:bearer|token)\s+(?P<token>\S+)\s*$", re.IGNORECASE)

Comment = dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it; `body` is the parsed JSON (None when empty or not JSON)."""

    method: str
    path: str  # with the query string, as sent
    body: Any


def _now() -> str:
    # GitHub's timestamp format: UTC, second precision, trailing Z.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    # GitHub ignores a page parameter it cannot parse rather than failing the request.
    try:
        return int(query[name][0])
    except (KeyError, IndexError, ValueError):
        return default


class _Server(ThreadingHTTPServer):
    # Handlers run on worker threads; daemon ones never keep a finished test session alive.
    daemon_threads = True

    def __init__(self, standin: GitHubApiStandin) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.standin = standin


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the recorded requests are the log; stderr noise would drown pytest output

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
            parsed = True
        except (UnicodeDecodeError, json.JSONDecodeError):
            body, parsed = None, False
        standin = self.server.standin
        standin._record(RecordedRequest(method, self.path, body))
        # GitHub checks credentials before it looks at the route: a bad token never reveals what exists.
        if not standin._authorized(self.headers.get("Authorization")):
            self._reply(HTTPStatus.UNAUTHORIZED, {"message": "Bad credentials"})
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if match := _LIST_OR_CREATE.match(url.path):
            repo, number = f"{match['owner']}/{match['repo']}", int(match["number"])
            if method == "GET":
                per_page = min(max(_int_param(query, "per_page", DEFAULT_PER_PAGE), 1), MAX_PER_PAGE)
                page = max(_int_param(query, "page", 1), 1)
                everything = standin.comments(repo, number)
                start = (page - 1) * per_page
                headers = self._link_header(url.path, page, per_page, len(everything))
                self._reply(HTTPStatus.OK, everything[start : start + per_page], headers)
                return
            if method == "POST":
                if not parsed:
                    self._reply(HTTPStatus.BAD_REQUEST, {"message": "Problems parsing JSON"})
                elif not isinstance(body, dict) or not isinstance(body.get("body"), str):
                    self._reply(HTTPStatus.UNPROCESSABLE_ENTITY, {"message": "Validation Failed"})
                else:
                    self._reply(HTTPStatus.CREATED, standin.seed_comment(repo, number, body["body"]))
                return
        elif (match := _ONE_COMMENT.match(url.path)) and method == "PATCH":
            if not parsed:
                self._reply(HTTPStatus.BAD_REQUEST, {"message": "Problems parsing JSON"})
            elif not isinstance(body, dict) or not isinstance(body.get("body"), str):
                self._reply(HTTPStatus.UNPROCESSABLE_ENTITY, {"message": "Validation Failed"})
            elif (
                updated := standin._update(f"{match['owner']}/{match['repo']}", int(match["id"]), body["body"])
            ) is None:
                self._reply(HTTPStatus.NOT_FOUND, {"message": "Not Found"})
            else:
                self._reply(HTTPStatus.OK, updated)
            return
        elif (match := _APPROVALS.match(url.path)) and method == "GET":
            # GET /repos/{owner}/{repo}/actions/runs/{run_id}/approvals: the reviews of the run's deployments,
            # in GitHub's shape (environments, state, comment, user); a test sets them with approve().
            self._reply(HTTPStatus.OK, list(standin.approvals))
            return
        elif settings := standin.settings.handle(method, url.path.strip("/").split("/"), query, body, parsed):
            self._reply(*settings)
            return
        # Anything else GitHub answers with 404 too (it does not say "method not allowed").
        self._reply(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    def _link_header(self, path: str, page: int, per_page: int, total: int) -> dict[str, str]:
        # Clients that follow GitHub's pagination by `Link: <...>; rel="next"` work as well as page counting.
        last = max((total + per_page - 1) // per_page, 1)
        base = f"{self.server.standin.url}{path}?per_page={per_page}&page="
        links = []
        if page < last:
            links += [f'<{base}{page + 1}>; rel="next"', f'<{base}{last}>; rel="last"']
        if page > 1:
            links += [f'<{base}1>; rel="first"', f'<{base}{min(page - 1, last)}>; rel="prev"']
        return {"Link": ", ".join(links)} if links else {}

    def _reply(self, status: HTTPStatus, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class GitHubApiStandin:
    """Stands in for the GitHub-hosted REST API (issue comments, repository settings) on 127.0.0.1, for tests.

    List (`GET .../issues/{n}/comments`, paginated), create (`POST`, 201) and update
    (`PATCH .../issues/comments/{id}`) comments of any owner/repo, behind a bearer token. Every request
    is recorded, so a test can assert both what a workflow posted and how it got there.
    """

    def __init__(self, token: str = "mlgate-standin-token") -> None:
        self.token = token
        self._lock = threading.Lock()
        self._comments: dict[tuple[str, int], list[Comment]] = {}
        self._requests: list[RecordedRequest] = []
        # Ids are unique across all repositories, as on GitHub, so PATCH by id alone finds the comment.
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        # Repositories, users, teams, environments and rulesets; `settings.administration = False` makes
        # the token one without the Administration permission (403 on settings writes).
        self.settings = RepoSettings()
        # What GET .../actions/runs/{id}/approvals answers: the approvals of a run's environment deployments.
        self.approvals: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None

    def start(self) -> GitHubApiStandin:
        if self._server is not None:
            return self
        # Port 0: the kernel picks a free port while binding, so there is no window for another process.
        self._server = _Server(self)
        # A short poll interval: shutdown() waits up to one interval, 0.5 s by default, on every stop().
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-api-standin", daemon=True
        )
        self._thread.start()
        return self

    def approve(self, environment: str, login: str, comment: str = "") -> None:
        """Record that `login` approved the run's deployment to `environment` (as a required reviewer would)."""
        self.approvals.append({
            "environments": [{"id": 1, "name": environment, "url": f"{self.url}/environments/{environment}"}],
            "state": "approved",
            "comment": comment,
            "user": {"login": login, "id": 1000 + len(self.approvals), "type": "User"},
        })  # fmt: skip

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> GitHubApiStandin:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API root to use as GITHUB_API_URL, e.g. http://127.0.0.1:PORT (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("GitHubApiStandin is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def comments(self, repo: str, number: int) -> list[Comment]:
        """The comments of issue/PR `number` in `repo` ("owner/name"), oldest first (copies)."""
        with self._lock:
            return copy.deepcopy(self._comments.get((repo, number), []))

    def seed_comment(self, repo: str, number: int, body: str) -> Comment:
        """Add a comment as if someone had posted it before the test; returns it (a copy)."""
        now = _now()
        with self._lock:
            comment_id = next(self._ids)
            comment: Comment = {
                "id": comment_id,
                "url": f"{self._api_root()}/repos/{repo}/issues/comments/{comment_id}",
                "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{comment_id}",
                "issue_url": f"{self._api_root()}/repos/{repo}/issues/{number}",
                "body": body,
                "user": {"login": "github-actions[bot]", "type": "Bot"},
                "created_at": now,
                "updated_at": now,
            }
            self._comments.setdefault((repo, number), []).append(comment)
            return copy.deepcopy(comment)

    def _api_root(self) -> str:
        # Seeding before start() is allowed; such comments get an API url without a port.
        return self.url if self._server is not None else "http://127.0.0.1"

    def _update(self, repo: str, comment_id: int, body: str) -> Comment | None:
        with self._lock:
            for (owner_repo, _number), comments in self._comments.items():
                if owner_repo != repo:
                    continue
                for comment in comments:
                    if comment["id"] == comment_id:
                        comment["body"] = body
                        comment["updated_at"] = _now()
                        return copy.deepcopy(comment)
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _authorized(self, header: str | None) -> bool:
        match = _AUTHORIZATION.match(header or "")
        # compare_digest, as for any secret: costs nothing, even in a test double.
        return match is not None and hmac.compare_digest(match["token"].encode(), self.token.encode())
