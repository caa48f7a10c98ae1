"""What the reporter's database holds, to compare before and after an attack or a fault."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bk_reporter.pgcluster import LocalCluster


@contextlib.contextmanager
def throwaway_cluster(*, fsync: bool) -> Iterator[LocalCluster]:
    """A private PostgreSQL cluster, started, and destroyed afterwards.

    It lives directly under the system temp directory because, as root, the server runs as
    `postgres`, which cannot enter pytest's private (0700) temp tree.
    """
    cluster = LocalCluster.under(Path(tempfile.mkdtemp(prefix="bk-pg-")), fsync=fsync)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


# The record of refused signatures and keys (migrations/0013), written for exactly the requests
# that "nothing was written" is said of: left out of those comparisons unless asked for, and
# checked on its own in tests/integration/test_reporter_refusals.py.
REFUSALS = ("refusals",)


def _tables(conn: psycopg.Connection, without: tuple[str, ...]) -> list[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return sorted(row[0] for row in rows if row[0] not in without)


def row_counts(url: str, *, without: tuple[str, ...] = REFUSALS) -> dict[str, int]:
    """Rows in every table of the reporter's schema (to show that nothing was written)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in _tables(conn, without)
        }


def table_snapshot(url: str, *, without: tuple[str, ...] = REFUSALS) -> dict[str, list[str]]:
    """Every row of every table of the reporter's schema, as sorted text (compare before/after)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"').fetchall()))
            for table in _tables(conn, without)
        }


def stored_ids(url: str) -> list[str]:
    """Ids of all stored manifests, one entry per row (a duplicate row would show twice)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(row[0]) for row in conn.execute("SELECT id FROM events")]


def chain_figures(url: str) -> tuple[dict[str, tuple[int, int]], int]:
    """(events, last_seq) per host from host_chain, and the number of chain_breaks."""
    with psycopg.connect(url, autocommit=True) as conn:
        chains = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT host, events, last_seq FROM host_chain")}
        breaks = conn.execute("SELECT count(*) FROM chain_breaks").fetchone()[0]
    return chains, breaks


def refused_to_the_owner_unless_in_maintenance(owner_url: str, statement: str) -> None:
    """The append-only triggers refuse `statement` even to the schema owner; with the maintenance
    switch set for one transaction the owner may run it (and does)."""
    with psycopg.connect(owner_url) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        conn.rollback()
        with conn.transaction():
            conn.execute("SET LOCAL bk.maintenance = 'on'")
            conn.execute(statement)
