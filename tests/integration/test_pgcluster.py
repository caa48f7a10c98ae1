"""The private cluster used by tests and by the reporter's embedded mode."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from bk_reporter.pgcluster import ClusterError, LocalCluster
from support.database import throwaway_cluster


def test_fresh_database_is_empty_and_isolated(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE marker (x int)")
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()
    assert tables == (1,)


def test_each_test_gets_its_own_database(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()
    assert tables == (0,)


def test_cluster_survives_restart_with_its_data() -> None:
    with throwaway_cluster(fsync=False) as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        cluster.stop()
        assert not cluster.running
        cluster.start()
        with psycopg.connect(cluster.url()) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("still here",)


def test_socket_path_too_long_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="too long a path"):
        LocalCluster.under(tmp_path / ("x" * 100))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to the postgres user")
def test_unreachable_parent_is_a_clear_error_and_nothing_is_loosened(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    cluster = LocalCluster.under(private / "cluster", fsync=False)
    with pytest.raises(ClusterError, match="cannot enter"):
        cluster.start()
    assert private.stat().st_mode & 0o777 == 0o700
    assert not cluster.base.exists()
