"""Fixtures of the reliability suite; its helpers are in tests/support, the PostgreSQL cluster and
`reporter_db` in tests/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from bk_reporter.pgcluster import LocalCluster
from support.reporters import ReporterDatabase, migrated


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
