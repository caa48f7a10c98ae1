"""The list of states is named once in Python (readmodel.STATES) and its rules live in SQL
(fleet_status, bk_state_rank, grafana_fleet_states): this holds the two to the same list, on a
stored fleet in which every state occurs."""

from __future__ import annotations

import psycopg
import pytest

from bk_reporter.pgcluster import LocalCluster
from bk_reporter.readmodel import STATE_MEANINGS, STATES
from support.web_fleet import StoredFleet, stored_fleet


@pytest.fixture(scope="module")
def fleet(pg_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> StoredFleet:
    return stored_fleet(pg_cluster, tmp_path_factory.mktemp("fleet-keys"))


def _column(url: str, sql: str) -> list:
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute(sql)]


def test_every_state_the_view_produces_is_named_in_python_and_every_named_state_occurs(fleet: StoredFleet) -> None:
    produced = set(_column(fleet.database.owner_url, "SELECT DISTINCT state FROM fleet_status"))
    assert produced == set(STATES)
    assert set(STATE_MEANINGS) == set(STATES)


def test_sql_ranks_the_states_in_pythons_order_worst_first(fleet: StoredFleet) -> None:
    ranks = _column(fleet.database.owner_url, f"SELECT bk_state_rank(s) FROM unnest(ARRAY{list(STATES)}) AS s")
    assert ranks == list(range(1, len(STATES) + 1))
    assert _column(fleet.database.owner_url, "SELECT state FROM grafana_fleet_states ORDER BY state_rank") == list(
        STATES
    )
