"""Shared fixtures: a real throwaway PostgreSQL cluster for integration tests."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent
# The collection is importable as ansible_collections.bkfleet.backup through the
# link that scripts/bootstrap.sh keeps under .cache/collections.
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from bk_reporter.pgcluster import LocalCluster  # noqa: E402
from support.database import throwaway_cluster  # noqa: E402
from support.reporters import ReporterDatabase, migrated  # noqa: E402
from support.tools import RESTIC_BUILDS, tool  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalCluster]:
    """One private PostgreSQL cluster per test session (fsync off: throwaway data)."""
    with throwaway_cluster(fsync=False) as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: LocalCluster) -> Iterator[str]:
    """A fresh, empty database in the session's cluster; dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_cluster.url(name)
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=sorted(RESTIC_BUILDS), ids=lambda version: f"restic-{version}")
def restic_build(request: pytest.FixtureRequest) -> str:
    """The path of each supported restic in turn (a test using it runs once per version)."""
    return tool(RESTIC_BUILDS[request.param])


@pytest.fixture
def reporter_db(pg_url: str) -> ReporterDatabase:
    """A fresh database with the reporter's schema; owner and application connections."""
    return migrated(pg_url)
