"""Fixtures of the integration tests in this directory; their helpers are in tests/support."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support.keys import make_key
from support.reporters import LiveReporter, ReporterDatabase, enroll, serving
from support.runner_hosts import initialized_repository
from support.signing_hosts import SigningHost


@pytest.fixture
def web1(reporter_db: ReporterDatabase, tmp_path: Path) -> SigningHost:
    """An enrolled client host with an ed25519 key made by ssh-keygen."""
    host = SigningHost("web1", make_key(tmp_path, "web1"))
    enroll(reporter_db.owner_url, host)
    return host


@pytest.fixture
def reporter(reporter_db: ReporterDatabase) -> Iterator[LiveReporter]:
    with serving(reporter_db) as live:
        yield live


@pytest.fixture
def client(reporter: LiveReporter) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=reporter.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def repository_template(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """An empty repository initialised by the given restic, made once per restic and session."""
    made: dict[str, Path] = {}

    def template(restic: str) -> Path:
        if restic not in made:
            made[restic] = initialized_repository(tmp_path_factory.mktemp("template"), restic)
        return made[restic]

    return template


@pytest.fixture(scope="module")
def empty_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised restic repository, copied by each runner test that needs one."""
    return initialized_repository(tmp_path_factory.mktemp("template"))
