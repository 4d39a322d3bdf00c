"""A small client of GitHub's REST API (urllib, the headers gha.upsert_pr_comment sends), for repository settings.

An HTTP error answer becomes `HttpError`, which the caller turns into the error a user reads (it knows
which permission the endpoint needs); a server that cannot be reached becomes a ToolError (exit 4).
Redirects are not followed: the token must never travel to another host, and GitHub answers a
request it will not repeat (a branch policy that exists already) with 303.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mlgate import __version__
from mlgate.errors import ToolError
from mlgate.redaction import register

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TIMEOUT_S = 30.0
MAX_PAGES = 50  # 5,000 items at 100 a page: more is a runaway loop, not a repository


def api_url(environ: Mapping[str, str] | None = None) -> str:
    """GITHUB_API_URL (set on every runner, GitHub Enterprise Server's own there), else api.github.com."""
    env = os.environ if environ is None else environ
    return (env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")


def token_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """GITHUB_TOKEN, else GH_TOKEN (the GitHub CLI's name); None when neither is set."""
    env = os.environ if environ is None else environ
    return env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or None


@dataclass
class HttpError(Exception):
    """GitHub answered `status`; `message` and `errors` are from its JSON body (never the request's headers)."""

    status: int
    method: str
    path: str
    message: str
    errors: list[str] = field(default_factory=list)
    rate_limited: bool = False

    def __post_init__(self) -> None:
        super().__init__(f"{self.method} {self.path}: {self.status} {self.message}")

    def detail(self) -> str:
        """`status message (error; error)`, as GitHub said it."""
        extra = f" ({'; '.join(self.errors)})" if self.errors else ""
        return f"{self.status} {self.message}{extra}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


@dataclass(frozen=True)
class Response:
    status: int
    body: Any


class GitHubApi:
    """Requests to one API root with one token; `path` arguments start with `/` (`/repos/o/r`)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = TIMEOUT_S) -> None:
        register(token, mask=False)  # whoever built this client: the token is a secret from now on
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def request(self, method: str, path: str, payload: object = None) -> Response:
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": f"mlgate/{__version__}",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers=headers)  # noqa: S310
        try:
            with self._opener.open(request, timeout=self._timeout) as answer:
                raw = answer.read()
                return Response(answer.status, json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, method, path) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", None) or exc
            host = urlsplit(self.base_url).netloc or self.base_url
            raise ToolError(
                f"cannot reach GitHub's API at {host} ({method} {path}): {reason}",
                hint="check the network and GITHUB_API_URL (default https://api.github.com), then run again",
            ) from None
        except json.JSONDecodeError:
            raise ToolError(
                f"GitHub's API at {self.base_url} answered {method} {path} with something that is not JSON",
                hint="check GITHUB_API_URL: it must be the REST API root, e.g. https://api.github.com",
            ) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path).body

    def get_pages(self, path: str, key: str | None = None) -> list[Any]:
        """Every item of a list endpoint, 100 a page; `key` names the list inside an object answer."""
        items: list[Any] = []
        joiner = "&" if "?" in path else "?"
        for page in range(1, MAX_PAGES + 1):
            body = self.get(f"{path}{joiner}per_page=100&page={page}")
            listed = body.get(key) if key and isinstance(body, dict) else body
            if not isinstance(listed, list):
                break
            items += listed
            if len(listed) < 100:
                break
        return items


def _http_error(exc: urllib.error.HTTPError, method: str, path: str) -> HttpError:
    try:
        body = json.loads(exc.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        body = None
    message = str(body.get("message", "")) if isinstance(body, dict) else ""
    errors: list[str] = []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        for error in body["errors"]:
            if isinstance(error, str):
                errors.append(error)
            elif isinstance(error, dict):
                errors.append(str(error.get("message") or error.get("code") or error))
    remaining = exc.headers.get("X-RateLimit-Remaining") if exc.headers else None
    return HttpError(
        status=exc.code,
        method=method,
        path=path,
        message=message or (exc.reason if isinstance(exc.reason, str) else "") or "no message",
        errors=errors,
        rate_limited=exc.code in (403, 429) and remaining == "0",
    )


__all__ = ["API_VERSION", "DEFAULT_API_URL", "GitHubApi", "HttpError", "Response", "api_url", "token_from_environment"]
