"""The reporter role's pgpass lines, read by libpq against a PostgreSQL that asks for the password:
a password with a colon and a backslash logs in, and the same line without the escapes does not."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ansible_collections.bkfleet.backup.plugins.filter.pgpass import pgpass_line
from bk_reporter.pgcluster import LocalCluster
from support.database import throwaway_cluster

ROLE = "bk_pgpass"
PASSWORD = "to:ken\\with:both\\"


@pytest.fixture(scope="module")
def password_cluster() -> Iterator[LocalCluster]:
    """A private cluster whose socket asks ROLE for its scram password (everyone else: trust)."""
    with throwaway_cluster(fsync=False) as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            create = psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(psycopg.sql.Identifier(ROLE), PASSWORD)
            conn.execute(create)
            hba = cluster.data_dir / "pg_hba.conf"
            hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        yield cluster


def log_in_with(cluster: LocalCluster, line: str) -> str:
    """The role libpq logs in as, given a password file holding LINE."""
    descriptor, name = tempfile.mkstemp(prefix="bk-pgpass-")
    try:
        os.write(descriptor, line.encode())
        os.close(descriptor)
        with psycopg.connect(cluster.url(user=ROLE), passfile=name, connect_timeout=5) as conn:
            return conn.execute("SELECT current_user").fetchone()[0]
    finally:
        Path(name).unlink()


def test_a_password_with_colons_and_backslashes_logs_in(password_cluster: LocalCluster) -> None:
    assert log_in_with(password_cluster, pgpass_line(PASSWORD, ROLE)) == ROLE


def test_the_same_line_without_escapes_is_refused(password_cluster: LocalCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        log_in_with(password_cluster, f"*:*:*:{ROLE}:{PASSWORD}\n")


def test_a_field_other_than_the_wildcard_is_escaped_too() -> None:
    assert pgpass_line("p", "u", host="/run/a:b") == "/run/a\\:b:*:*:u:p\n"
