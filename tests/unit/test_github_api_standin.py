"""The GitHub API stand-in: upsert_pr_comment round-trips through it, bad tokens get 401, pages work."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlgate import gha

from tests.e2e.github_api import GitHubApiStandin

REPO = "example/fraud-detection"
PR = 7


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubApiStandin]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "synchronize", "number": PR, "pull_request": {"number": PR}}))
    with GitHubApiStandin(token="t0ken") as standin:
        monkeypatch.setenv("GITHUB_API_URL", standin.url)
        monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
        monkeypatch.setenv("GITHUB_TOKEN", standin.token)
        monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
        yield standin


def _call(url: str, token: str, method: str = "GET", payload: object = None) -> tuple[int, object]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_upsert_creates_then_patches_one_comment(api: GitHubApiStandin) -> None:
    api.seed_comment(REPO, PR, "someone else's comment")
    first = gha.upsert_pr_comment("data", "first body")
    second = gha.upsert_pr_comment("data", "second body")

    comments = api.comments(REPO, PR)
    ours = [c for c in comments if gha.marker("data") in c["body"]]
    assert len(comments) == 2
    assert len(ours) == 1
    assert ours[0]["body"] == f"{gha.marker('data')}\nsecond body"
    assert ours[0]["user"]["login"] == "github-actions[bot]"
    assert first == second == ours[0]["html_url"]

    writes = [(r.method, r.path) for r in api.requests if r.method != "GET"]
    assert writes == [
        ("POST", f"/repos/{REPO}/issues/{PR}/comments"),
        ("PATCH", f"/repos/{REPO}/issues/comments/{ours[0]['id']}"),
    ]
    assert api.requests[-1].body == {"body": f"{gha.marker('data')}\nsecond body"}


def test_wrong_token_is_rejected(api: GitHubApiStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "not-the-token")
    with pytest.raises(urllib.error.HTTPError) as failure:
        gha.upsert_pr_comment("data", "body")
    assert failure.value.code == 401
    assert json.loads(failure.value.read()) == {"message": "Bad credentials"}
    assert api.comments(REPO, PR) == []
    assert len(api.requests) == 1  # rejected requests are recorded too


def test_unknown_comment_is_404(api: GitHubApiStandin) -> None:
    with pytest.raises(urllib.error.HTTPError) as failure:
        _call(f"{api.url}/repos/{REPO}/issues/comments/999", api.token, "PATCH", {"body": "x"})
    assert failure.value.code == 404
    assert json.loads(failure.value.read()) == {"message": "Not Found"}


def test_pagination_past_100_comments(api: GitHubApiStandin) -> None:
    for i in range(150):
        api.seed_comment(REPO, PR, f"chatter {i}")
    api.seed_comment(REPO, PR, f"{gha.marker('data')}\nold")
    base = f"{api.url}/repos/{REPO}/issues/{PR}/comments"

    def size(query: str) -> int:
        status, page = _call(f"{base}{query}", api.token)
        assert status == 200 and isinstance(page, list)
        return len(page)

    assert [size(f"?per_page=100&page={n}") for n in (1, 2, 3)] == [100, 51, 0]
    assert size("") == 30  # GitHub's default page size
    assert size("?per_page=500") == 100  # and its maximum

    gha.upsert_pr_comment("data", "new")  # the marker is on page 2: found there, updated, not duplicated
    comments = api.comments(REPO, PR)
    assert len(comments) == 151
    assert comments[-1]["body"] == f"{gha.marker('data')}\nnew"
    pages = [r.path for r in api.requests if r.method == "GET" and "per_page=100" in r.path]
    assert pages[-2:] == [f"/repos/{REPO}/issues/{PR}/comments?per_page=100&page={n}" for n in (1, 2)]


def test_stop_closes_the_socket() -> None:
    standin = GitHubApiStandin().start()
    url = standin.url
    standin.stop()
    with pytest.raises(urllib.error.URLError):
        _call(f"{url}/repos/{REPO}/issues/1/comments", standin.token)
