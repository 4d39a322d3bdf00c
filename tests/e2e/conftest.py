"""One workbench per test session: the exported checkout and the runner's tool cache are shared."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.github_api import GitHubApiStandin
from tests.e2e.harness import Workbench
from tests.e2e.mlflow_server import MlflowServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def workbench(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> Iterator[Workbench]:
    if shutil.which("git") is None:
        pytest.fail("git is required for the end-to-end tests (make test installs it)")
    root: Path = tmp_path_factory.mktemp("workbench")
    yield Workbench(root, tracking_uri=mlflow_server.uri)


@pytest.fixture
def github_api() -> Iterator[GitHubApiStandin]:
    """A loopback stand-in of GitHub's issue-comment API, fresh for each test (its PR comments)."""
    with GitHubApiStandin() as standin:
        yield standin
