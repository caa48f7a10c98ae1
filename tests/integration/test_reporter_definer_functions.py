"""The application role cannot borrow the schema owner's rights through the trigger functions.

The derived state is written by SECURITY DEFINER trigger functions: they run as the owner on
every `INSERT INTO events`. Were a name in them resolved through the caller's temporary schema,
the application role could put a table of its own there, with a trigger of its own, and have
the owner run that trigger. These tests make that attack as the application role would.
"""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest
from psycopg import sql

from support.database import row_counts
from support.reporters import LiveReporter
from support.signing_hosts import SigningHost

# A temporary table shadowing host_chain (the first table the derive function writes), whose
# trigger deletes every event and enrols the attacker's key for web1 - with the owner's rights.
SHADOW_HOST_CHAIN = """
CREATE TEMP TABLE host_chain (
    host text PRIMARY KEY, events bigint, last_seq bigint,
    first_received_at timestamptz, last_received_at timestamptz
);
CREATE FUNCTION pg_temp.take_over() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('bk.maintenance', 'on', true);
    DELETE FROM public.events;
    INSERT INTO public.host_keys (host, fingerprint, public_key, key_type, comment)
    VALUES ('web1', 'SHA256:attacker', 'ssh-ed25519 AAAAattacker', 'ssh-ed25519', 'attacker');
    RETURN NULL;
END
$$;
CREATE TRIGGER take_over AFTER INSERT ON host_chain FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.take_over();
"""

# Any row the application role may add: it needs no valid signature to reach the trigger.
ADD_EVENT = """
INSERT INTO events (id, host, seq, sha256, kind, status, started_at, finished_at, key_fingerprint, manifest, signature)
VALUES (%s, 'intruder', 1, 'x', 'backup', 'success', now(), now(), 'SHA256:x', '{}', '')
"""


@pytest.fixture
def three_events(client: httpx.Client, web1: SigningHost) -> None:
    response = client.post("/api/v1/manifests/batch", json=[web1.envelope() for _n in range(3)])
    assert [item["status"] for item in response.json()] == [201] * 3


def _attack(app_url: str) -> None:
    with psycopg.connect(app_url, autocommit=True) as conn:
        conn.execute(SHADOW_HOST_CHAIN)
        conn.execute(ADD_EVENT, (uuid.uuid4(),))


def _grant_temp_back(reporter: LiveReporter) -> None:
    """What a database whose administrator restored PUBLIC's default TEMP privilege looks like."""
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO PUBLIC").format(sql.Identifier(name)))


def _evidence(reporter: LiveReporter) -> tuple[list[str], list[tuple[str, str]]]:
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        hosts = [row[0] for row in conn.execute("SELECT host FROM events ORDER BY host, seq")]
        keys = conn.execute("SELECT host, comment FROM host_keys ORDER BY host, comment").fetchall()
    return hosts, keys


def test_the_application_role_may_not_create_temporary_objects(three_events: None, reporter: LiveReporter) -> None:
    before = row_counts(reporter.database.owner_url)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="temporary"):
        _attack(reporter.database.app_url)
    assert row_counts(reporter.database.owner_url) == before


def test_a_temporary_table_shadowing_derived_state_never_runs_as_the_owner(
    three_events: None, reporter: LiveReporter, web1: SigningHost
) -> None:
    _grant_temp_back(reporter)
    _attack(reporter.database.app_url)
    hosts, keys = _evidence(reporter)
    assert hosts == ["intruder", "web1", "web1", "web1"]
    assert keys == [("web1", web1.public_line.split()[2])]
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        chain = dict(conn.execute("SELECT host, events FROM public.host_chain").fetchall())
    assert chain == {"intruder": 1, "web1": 3}


def test_every_security_definer_function_has_a_search_path_with_pg_temp_last(reporter: LiveReporter) -> None:
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        definers = conn.execute(
            "SELECT p.proname, coalesce(p.proconfig, '{}') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public' AND p.prosecdef ORDER BY p.proname"
        ).fetchall()
    assert definers, "the schema has SECURITY DEFINER trigger functions: this test must see them"
    paths = {name: [c.partition("=")[2] for c in config if c.startswith("search_path=")] for name, config in definers}
    unsafe = {name: path for name, path in paths.items() if path != ["pg_catalog, public, pg_temp"]}
    assert unsafe == {}, "every SECURITY DEFINER function needs SET search_path = pg_catalog, public, pg_temp"
