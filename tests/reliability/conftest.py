"""Fixtures of the reliability suite. It reuses the integration tests' reporter helpers
(tests/integration/reporter_fixtures.py) and the session's PostgreSQL cluster (tests/conftest.py)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from reporter_fixtures import ReporterDatabase, migrated

from bk_reporter.pgcluster import LocalCluster


@pytest.fixture
def reporter_db(pg_url: str) -> ReporterDatabase:
    """A fresh database with the reporter's schema; owner and application connections."""
    return migrated(pg_url)


@pytest.fixture(scope="module")
def module_reporter_db(pg_cluster: LocalCluster) -> Iterator[ReporterDatabase]:
    """A migrated database shared by the tests of one module (dropped after it)."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield migrated(pg_cluster.url(name))
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
