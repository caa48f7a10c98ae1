"""The event store: append-only by construction, and derived state kept in step with it."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bk_evidence import manifest as bk_manifest
from bk_reporter import db
from bk_reporter.app import Reporter
from bk_reporter.settings import Settings
from support.database import refused_to_the_owner_unless_in_maintenance
from support.keys import make_key
from support.reporters import LiveReporter, ReporterDatabase, as_user, enroll
from support.signing_hosts import SigningHost


def post_all(client: httpx.Client, envelopes: list[dict[str, str]]) -> list[int]:
    response = client.post("/api/v1/manifests/batch", json=envelopes)
    assert response.status_code == 200, response.text
    return [item["status"] for item in response.json()]


def fleet(client: httpx.Client) -> dict[tuple[str, str | None, str | None], str]:
    hosts = client.get("/api/v1/hosts").json()["hosts"]
    states = {}
    for host in hosts:
        states.update({(host["host"], job["job"], job["kind"]): job["state"] for job in host["jobs"]})
        if not host["jobs"]:
            states[(host["host"], None, None)] = host["state"]
    return states


def query(url: str, statement: str, *params: object) -> list[dict]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(statement, params).fetchall()


def enrolled(reporter: LiveReporter, key_dir: Path, name: str) -> SigningHost:
    """A host of that name with a key of its own, enrolled with the reporter."""
    host = SigningHost(name, make_key(key_dir, name))
    enroll(reporter.database.owner_url, host)
    return host


def hub_receipt(hub: SigningHost, directory: str, snapshot: str) -> dict[str, str]:
    """The hub's receipt for one snapshot file that arrived in its repository `directory`."""
    return hub.envelope(
        kind="hub-receipt",
        job=None,
        snapshot=None,
        stats=None,
        cadence_seconds=None,
        repository={"name": directory},
        receipt={"snapshots": [{"id": snapshot, "size": 512, "arrived_at": "2026-01-01T00:00:00Z"}]},
    )


# -- append-only -------------------------------------------------------------------------------

FORBIDDEN_TO_THE_APP = [
    "UPDATE events SET status = 'failure'",
    "DELETE FROM events",
    "TRUNCATE events",
    "INSERT INTO host_keys (host, fingerprint, public_key, key_type) VALUES ('x', 'SHA256:x', 'ssh-ed25519 A', 'x')",
    "UPDATE host_keys SET retired_at = now()",
    "UPDATE job_status SET last_status = 'success'",
    "DELETE FROM host_chain",
    "INSERT INTO chain_breaks (host, seq) VALUES ('web1', 1)",
    "UPDATE status_policy SET stale_without_cadence = '1 year'",
    "UPDATE refusals SET code = 'x'",
    "DELETE FROM refusals",
    "TRUNCATE refusals",
]


@pytest.mark.parametrize("statement", FORBIDDEN_TO_THE_APP)
def test_the_application_role_may_only_add_events(
    statement: str, client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    assert post_all(client, [web1.envelope()]) == [201]
    with psycopg.connect(reporter.database.app_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


@pytest.mark.parametrize("statement", ["UPDATE events SET status = 'failure'", "DELETE FROM events", "TRUNCATE events"])
def test_not_even_the_owner_may_change_events_without_the_maintenance_switch(
    statement: str, client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    assert post_all(client, [web1.envelope()]) == [201]
    refused_to_the_owner_unless_in_maintenance(reporter.database.owner_url, statement)
    assert query(reporter.database.owner_url, "SELECT count(*) AS n FROM events WHERE status = 'success'") == [{"n": 0}]


def test_an_enrolled_key_can_be_retired_once_and_never_deleted(
    reporter_db: ReporterDatabase, web1: SigningHost
) -> None:
    with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
        conn.execute("UPDATE host_keys SET retired_at = now() WHERE host = 'web1'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="retired, once"):
            conn.execute("UPDATE host_keys SET retired_at = now() WHERE host = 'web1'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="retired, once"):
            conn.execute("UPDATE host_keys SET host = 'other'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM host_keys")


def test_migrating_again_changes_nothing(reporter_db: ReporterDatabase) -> None:
    assert db.migrate(reporter_db.owner_url, "bk_reporter_app") == []
    versions = query(reporter_db.owner_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [row["version"] for row in versions] == [m.version for m in db.available_migrations()]
    assert db.pending_migrations(reporter_db.app_url) == []


# -- chain state -------------------------------------------------------------------------------


def test_gaps_are_seen_and_filled_by_late_deliveries(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    envelopes = [web1.envelope() for _n in range(5)]
    assert post_all(client, [envelopes[0], envelopes[3], envelopes[4]]) == [201] * 3
    detail = client.get("/api/v1/hosts/web1").json()
    assert detail["chain"] == {**detail["chain"], "events": 3, "last_seq": 5, "missing": 2, "breaks": 0}
    assert detail["gaps"] == [{"first_missing": 2, "last_missing": 3}]
    assert detail["state"] == "gap"
    assert post_all(client, [envelopes[2], envelopes[1]]) == [201, 201]
    detail = client.get("/api/v1/hosts/web1").json()
    assert (detail["chain"]["missing"], detail["chain"]["breaks"], detail["gaps"], detail["state"]) == (0, 0, [], "ok")


def test_a_fork_is_a_break_at_the_seq_whose_prev_does_not_match(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    first, second = web1.envelope(), web1.envelope()
    forked = web1.envelope(web1.text(prev=bk_manifest.sha256_hex(web1.texts[0])))
    assert post_all(client, [forked, first, second]) == [201, 201, 201]
    detail = client.get("/api/v1/hosts/web1").json()
    assert detail["chain"]["breaks"] == 1 and detail["state"] == "gap"
    (link,) = detail["breaks"]
    assert (link["seq"], link["expected_prev"], link["found_prev"]) == (
        3,
        bk_manifest.sha256_hex(web1.texts[1]),
        bk_manifest.sha256_hex(web1.texts[0]),
    )


def test_a_first_manifest_naming_a_predecessor_is_a_break(client: httpx.Client, web1: SigningHost) -> None:
    assert post_all(client, [web1.envelope(web1.text(prev="0" * 64))]) == [201]
    assert client.get("/api/v1/hosts/web1").json()["breaks"][0]["seq"] == 1


def test_concurrent_single_posts_keep_the_chain_intact(client: httpx.Client, web1: SigningHost) -> None:
    envelopes = [web1.envelope() for _n in range(30)]
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda e: client.post("/api/v1/manifests", json=e).status_code, envelopes))
    assert statuses == [201] * 30
    chain = client.get("/api/v1/hosts/web1").json()["chain"]
    assert (chain["events"], chain["last_seq"], chain["missing"], chain["breaks"]) == (30, 30, 0, 0)


# -- status --------------------------------------------------------------------------------------


def test_each_state_is_derived_from_what_arrived(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    hourly = {"cadence_seconds": 3600}
    names = ("late1", "stale1", "fail1", "gap1", "quiet1", "miss1")
    late, stale, failing, gap, quiet, _never_reports = (enrolled(reporter, tmp_path, name) for name in names)
    envelopes = [
        web1.envelope(),
        late.envelope(ago=timedelta(minutes=80), **hourly),
        stale.envelope(ago=timedelta(hours=3), **hourly),
        stale.envelope(job="nocadence", cadence_seconds=None, ago=timedelta(hours=49)),
        failing.envelope(status="failure", snapshot=None),
        gap.envelope(),
        gap.envelope(gap.text(seq=3, prev=None)),
        quiet.envelope(kind="restore", job=None, cadence_seconds=None, snapshot=None, ago=timedelta(days=10)),
    ]
    assert post_all(client, envelopes) == [201] * len(envelopes)
    assert fleet(client) == {
        ("web1", "home", "backup"): "ok",
        ("late1", "home", "backup"): "late",
        ("stale1", "home", "backup"): "stale",
        ("stale1", "nocadence", "backup"): "stale",
        ("fail1", "home", "backup"): "failing",
        ("miss1", None, None): "missing",
        ("gap1", "home", "backup"): "gap",
        ("quiet1", "", "restore"): "ok",
    }
    hosts = client.get("/api/v1/hosts").json()
    assert [h["host"] for h in hosts["hosts"]][:2] == ["stale1", "miss1"]
    assert hosts["counts"] == {"stale": 2, "missing": 1, "failing": 1, "gap": 1, "unconfirmed": 0, "late": 1, "ok": 2}


def test_a_claim_the_hub_never_confirmed_is_unconfirmed_until_a_receipt_arrives(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    hub = enrolled(reporter, tmp_path, "hub1")
    claim = web1.envelope(ago=timedelta(hours=4))
    snapshot = json.loads(claim["manifest"])["snapshot"]["id"]
    direct = web1.envelope(repository={"name": "usb", "url": "/mnt/usb/restic"}, ago=timedelta(hours=4))
    assert post_all(client, [claim, direct]) == [201, 201]
    assert fleet(client)[("web1", "home", "backup")] == "unconfirmed"
    assert post_all(client, [hub_receipt(hub, "web1", snapshot)]) == [201]
    assert fleet(client)[("web1", "home", "backup")] == "ok"


def test_the_latest_run_is_the_one_that_finished_last_not_the_last_to_arrive(
    client: httpx.Client, web1: SigningHost
) -> None:
    recent = web1.envelope(status="failure", snapshot=None, ago=timedelta(minutes=1))
    older = web1.envelope(ago=timedelta(hours=2))
    assert post_all(client, [recent]) == [201]
    assert post_all(client, [older]) == [201]
    (job,) = client.get("/api/v1/hosts/web1").json()["jobs"]
    assert (job["last_status"], job["state"], job["runs"], job["failures"]) == ("failure", "failing", 2, 1)
    assert job["last_success_at"] == json.loads(older["manifest"])["finished_at"]


# -- lineage -------------------------------------------------------------------------------------


def test_lineage_joins_claim_receipt_and_offsite_in_any_order(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    hub = enrolled(reporter, tmp_path, "hub1")
    snapshot = "ab" * 32
    hub_fields = {"job": None, "snapshot": None, "stats": None, "cadence_seconds": None, "repository": {"name": "web1"}}
    offsite = hub.envelope(kind="offsite-copy", offsite={"destination": "b2", "snapshots": [snapshot]}, **hub_fields)
    receipt = hub.envelope(
        kind="hub-receipt",
        receipt={"snapshots": [{"id": snapshot, "size": 2048, "arrived_at": "2026-01-02T03:04:05Z"}]},
        **hub_fields,
    )
    claim = web1.envelope(snapshot={"id": snapshot})
    assert post_all(client, [offsite]) == [201]
    assert post_all(client, [receipt, claim]) == [201, 201]
    (lineage,) = query(reporter.database.owner_url, "SELECT * FROM snapshot_lineage")
    assert (lineage["host"], lineage["claimed"], lineage["received"], lineage["offsite"]) == ("web1", True, True, True)
    assert (lineage["hub_host"], lineage["hub_repository"], lineage["size_bytes"]) == ("hub1", "web1", 2048)
    assert lineage["offsite_destination_names"] == ["b2"]
    (snap,) = client.get("/api/v1/hosts/web1").json()["snapshots"]
    assert (snap["snapshot_id"], snap["received"], snap["offsite_destinations"]) == (snapshot, True, ["b2"])


def test_only_the_named_hub_confirms_a_claim_from_the_hosts_own_directory(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    # hub2 is enrolled and signs honestly-formed receipts, but web1's backups go to hub1.
    hub1, hub2 = (enrolled(reporter, tmp_path, name) for name in ("hub1", "hub2"))
    snapshot = "cd" * 32
    repository = {"name": "hub", "url": "rest:https://hub1:8000/web1/", "hub": "hub1"}
    # The rogue receipt arrives first, before the claim it would pre-empt.
    assert post_all(client, [hub_receipt(hub2, "web1", snapshot)]) == [201]
    claim = web1.envelope(snapshot={"id": snapshot}, repository=repository, ago=timedelta(hours=4))
    assert post_all(client, [claim]) == [201]
    assert fleet(client)[("web1", "home", "backup")] == "unconfirmed"
    # The right hub, but another client's directory.
    assert post_all(client, [hub_receipt(hub1, "db1", snapshot)]) == [201]
    assert fleet(client)[("web1", "home", "backup")] == "unconfirmed"
    (lineage,) = query(reporter.database.owner_url, "SELECT * FROM snapshot_lineage")
    assert (lineage["received"], lineage["hub_host"]) == (False, None)

    assert post_all(client, [hub_receipt(hub1, "web1", snapshot)]) == [201]
    assert fleet(client)[("web1", "home", "backup")] == "ok"
    (lineage,) = query(reporter.database.owner_url, "SELECT * FROM snapshot_lineage")
    assert (lineage["received"], lineage["hub_host"], lineage["hub_repository"]) == (True, "hub1", "web1")
    kept = query(reporter.database.owner_url, "SELECT hub_host, hub_repository FROM snapshot_receipts ORDER BY 1, 2")
    expected = [("hub1", "db1"), ("hub1", "web1"), ("hub2", "web1")]
    assert [(row["hub_host"], row["hub_repository"]) for row in kept] == expected


def test_a_receipt_before_the_claim_is_shown_then_dropped_when_the_claim_names_another_hub(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    hub2 = enrolled(reporter, tmp_path, "hub2")
    snapshot = "ef" * 32
    assert post_all(client, [hub_receipt(hub2, "web1", snapshot)]) == [201]
    (seen,) = query(reporter.database.owner_url, "SELECT host, received, hub_host FROM snapshot_lineage")
    assert (seen["host"], seen["received"], seen["hub_host"]) == (None, True, "hub2")
    repository = {"name": "hub", "url": "rest:https://hub1:8000/web1/", "hub": "hub1"}
    assert post_all(client, [web1.envelope(snapshot={"id": snapshot}, repository=repository)]) == [201]
    (claimed,) = query(reporter.database.owner_url, "SELECT host, received, hub_host FROM snapshot_lineage")
    assert (claimed["host"], claimed["received"], claimed["hub_host"]) == ("web1", False, None)


def _stored_before_migration(conn: psycopg.Connection, host: str, seq: int, kind: str, **columns: object) -> None:
    """An event row as an older reporter stored it (columns only; the derive triggers of that schema run)."""
    row = {
        "id": uuid.uuid4(),
        "host": host,
        "seq": seq,
        "sha256": f"{seq:064x}",
        "kind": kind,
        "status": "success",
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:01:00Z",
        "key_fingerprint": "SHA256:x",
        "manifest": "{}",
        "signature": "-",
        **columns,
    }
    names = ", ".join(row)
    conn.execute(f"INSERT INTO events ({names}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))


def _migrated_before(conn: psycopg.Connection, version: int) -> None:
    """The schema as a reporter left it whose newest migration is older than `version`."""
    conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for migration in db.available_migrations():
        if migration.version < version:
            conn.execute(migration.sql)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (migration.version, migration.name))


def test_migrating_keeps_the_size_of_each_repository_pruned_before_sizes_were_kept(pg_url: str) -> None:
    def prune(repository: str, finished: str, size: str, **fields: str) -> dict[str, object]:
        manifest = json.dumps({"prune": {"remaining_size": size}, **fields})
        return {"repository_name": repository, "finished_at": finished, "manifest": manifest}

    with psycopg.connect(pg_url, autocommit=True) as conn:
        _migrated_before(conn, 10)
        _stored_before_migration(conn, "hub1", 1, "prune", **prune("web1", "2026-01-01T00:01:00Z", "1.000 MiB"))
        _stored_before_migration(conn, "hub1", 2, "prune", **prune("web1", "2026-01-02T00:01:00Z", "2.000 KiB"))
        _stored_before_migration(conn, "hub1", 3, "prune", **prune("db1", "2026-01-01T00:01:00Z", "7 B", error="\x00"))
    db.migrate(pg_url, "bk_reporter_app")
    sizes = query(pg_url, "SELECT repository_name, size_bytes, size_text FROM repository_sizes ORDER BY 1")
    assert [(row["repository_name"], row["size_bytes"], row["size_text"]) for row in sizes] == [
        ("db1", 7, "7 B"),
        ("web1", 2048, "2.000 KiB"),
    ]


def test_migrating_to_per_hub_receipts_keeps_every_receipt_and_unconfirms_a_wrong_directory(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _migrated_before(conn, 14)
        good, wrong = "aa" * 32, "bb" * 32
        _stored_before_migration(conn, "web1", 1, "backup", snapshot_id=good, job="home")
        _stored_before_migration(conn, "web1", 2, "backup", snapshot_id=wrong, job="home")
        receipt = [{"snapshot": good}, {"snapshot": wrong}]
        _stored_before_migration(conn, "hub1", 1, "hub-receipt", repository_name="web1", lineage=Jsonb(receipt[:1]))
        _stored_before_migration(conn, "hub1", 2, "hub-receipt", repository_name="db1", lineage=Jsonb(receipt[1:]))
        before = conn.execute("SELECT snapshot_id, receipt_event_id IS NOT NULL FROM snapshots ORDER BY 1").fetchall()
        assert before == [(good, True), (wrong, True)]
    db.migrate(pg_url, "bk_reporter_app")
    lineage = query(pg_url, "SELECT snapshot_id, received, hub_repository FROM snapshot_lineage ORDER BY 1")
    assert [(row["snapshot_id"], row["received"], row["hub_repository"]) for row in lineage] == [
        (good, True, "web1"),
        (wrong, False, None),
    ]
    kept = query(pg_url, "SELECT snapshot_id, hub_repository FROM snapshot_receipts ORDER BY 1")
    assert [(row["snapshot_id"], row["hub_repository"]) for row in kept] == [(good, "web1"), (wrong, "db1")]


def _pages(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int", (table,))
    return int(row.fetchone()[0])


def test_the_rows_of_jobs_and_hosts_take_the_same_pages_however_long_the_history(pg_url: str) -> None:
    """Every statement rewrites each job's and host's row; the tables stay the size of the fleet."""
    db.migrate(pg_url, "bk_reporter_app")
    hosts, statements = 40, 150
    columns = (
        "id, host, seq, prev, sha256, kind, status, job, started_at, finished_at, key_fingerprint, manifest, signature"
    )
    row = "(%s, %s, %s, %s, %s, 'backup', 'success', 'home', %s, %s, 'SHA256:x', '{}', '-')"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # An old row version is pruned only once no snapshot in the database can see it. An
        # autovacuum worker's ANALYZE holds one for a while, and whatever updates meanwhile take
        # new pages: with autovacuum visiting every second, these tables doubled to quadrupled
        # within the test whatever their fillfactor. So nothing here is left for it to visit.
        for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall():
            conn.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
        conn.execute("VACUUM ANALYZE")
        for seq in range(1, statements + 1):
            finished = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=seq)
            params: list[object] = []
            for host in range(hosts):
                prev = f"{host:032x}{seq - 1:032x}" if seq > 1 else None
                sha = f"{host:032x}{seq:032x}"
                params += [uuid.uuid4(), f"web{host}", seq, prev, sha, finished - timedelta(minutes=1), finished]
            conn.execute(f"INSERT INTO events ({columns}) VALUES {', '.join([row] * hosts)}", params)
            if seq == statements // 10:
                early = {table: _pages(conn, table) for table in ("job_status", "host_chain")}
        last = {table: _pages(conn, table) for table in ("job_status", "host_chain")}
        runs = conn.execute("SELECT min(runs), max(runs) FROM job_status").fetchone()
        breaks = conn.execute("SELECT count(*) FROM chain_breaks").fetchone()
    assert runs == (statements, statements) and breaks == (0,)
    assert last == early, f"after {statements} statements the tables hold {last} pages, after a tenth {early}"


# -- reading -------------------------------------------------------------------------------------


def test_events_are_listed_a_page_at_a_time(client: httpx.Client, web1: SigningHost) -> None:
    envelopes = [web1.envelope(ago=timedelta(minutes=60 - i)) for i in range(7)]
    assert post_all(client, envelopes) == [201] * 7
    seen, cursor = [], None
    while True:
        params = {"host": "web1", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/events", params=params).json()
        seen.extend(event["seq"] for event in page["events"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(1, 8))
    since = json.loads(envelopes[4]["manifest"])["finished_at"]
    recent = client.get("/api/v1/events", params={"since": since, "kind": "backup"}).json()["events"]
    assert [event["seq"] for event in recent] == [5, 6, 7]
    assert client.get("/api/v1/events", params={"kind": "prune"}).json() == {"events": [], "next_cursor": None}


def test_one_event_is_served_verbatim(client: httpx.Client, web1: SigningHost) -> None:
    envelope = web1.envelope()
    assert post_all(client, [envelope]) == [201]
    event_id = json.loads(envelope["manifest"])["id"]
    event = client.get(f"/api/v1/events/{event_id}").json()
    assert (event["manifest"], event["signature"]) == (envelope["manifest"], envelope["signature"])
    assert client.get("/api/v1/events/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/api/v1/events/not-a-uuid").status_code == 404


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "x"}, {"since": "yesterday"}, {"cursor": "!!"}, {"host": "a\x00b"}]
)
def test_unusable_event_parameters_are_400(params: dict[str, str], client: httpx.Client) -> None:
    response = client.get("/api/v1/events", params=params)
    assert response.status_code == 400 and response.json()["code"] == "bad_parameter"


def test_unknown_hosts_are_404(client: httpx.Client) -> None:
    assert client.get("/api/v1/hosts/nobody").status_code == 404
    assert client.get("/api/v1/hosts/a%00b").status_code == 404


def test_metrics_expose_the_fleet_and_the_ingest_counters(client: httpx.Client, web1: SigningHost) -> None:
    envelope = web1.envelope()
    assert post_all(client, [envelope, envelope]) == [201, 200]
    client.post("/api/v1/manifests", content=b"nope")
    text = client.get("/metrics").text
    assert 'bk_job_state{host="web1",job="home",kind="backup",state="ok"} 1.0' in text
    assert 'bk_ingest_manifests_total{status="201",code="stored"} 1.0' in text
    assert 'bk_ingest_manifests_total{status="200",code="duplicate"} 1.0' in text
    assert 'bk_ingest_manifests_total{status="400",code="not_json"} 1.0' in text
    assert 'bk_host_chain_missing_manifests{host="web1"} 0.0' in text
    finished = bk_manifest.parse_timestamp(json.loads(envelope["manifest"])["finished_at"])
    assert (
        f'bk_job_last_success_timestamp_seconds{{host="web1",job="home",kind="backup"}} {finished.timestamp()!r}'
        in text
    )


def test_a_reader_role_reads_the_views_and_no_table(reporter_db: ReporterDatabase, web1: SigningHost) -> None:
    with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS bk_test_reader")
        conn.execute("CREATE ROLE bk_test_reader LOGIN")
    try:
        db.migrate(reporter_db.owner_url, "bk_reporter_app", "bk_test_reader")
        reader_url = as_user(reporter_db.owner_url, "bk_test_reader")
        with psycopg.connect(reader_url) as conn:
            assert conn.execute("SELECT state FROM fleet_status").fetchall() == [("missing",)]
            assert conn.execute("SELECT count(*) FROM snapshot_lineage").fetchone() == (0,)
        for table in ("events", "host_keys", "job_status", "refusals"):
            with psycopg.connect(reader_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table}")
    finally:
        with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY bk_test_reader")
            conn.execute("DROP ROLE bk_test_reader")


GRAFANA_VIEWS = {
    "grafana_fleet_states",
    "grafana_job_states",
    "grafana_runs",
    "grafana_backup_runs",
    "grafana_offsite_lag",
    "grafana_repository_sizes",
}


def test_the_reader_role_selects_from_every_grafana_view(reporter_db: ReporterDatabase) -> None:
    """Grafana connects as the reader role: every view its dashboards query must be readable."""
    dashboards = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
    queried = {
        name for path in dashboards.glob("*.json") for name in re.findall(r"\bFROM (grafana_\w+)", path.read_text())
    }
    assert queried <= GRAFANA_VIEWS
    with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS bk_test_grafana")
        conn.execute("CREATE ROLE bk_test_grafana LOGIN")
        views = {row[0] for row in conn.execute("SELECT viewname FROM pg_views WHERE viewname LIKE 'grafana%'")}
    assert views == GRAFANA_VIEWS
    try:
        db.migrate(reporter_db.owner_url, "bk_reporter_app", "bk_test_grafana")
        with psycopg.connect(as_user(reporter_db.owner_url, "bk_test_grafana"), autocommit=True) as conn:
            for view in sorted(GRAFANA_VIEWS):
                conn.execute(f"SELECT * FROM {view} LIMIT 1").fetchall()
    finally:
        with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY bk_test_grafana")
            conn.execute("DROP ROLE bk_test_grafana")


def test_a_missing_reader_role_is_a_clear_error(reporter_db: ReporterDatabase) -> None:
    with pytest.raises(db.DatabaseError, match="the reader role 'nobody_here' does not exist"):
        db.migrate(reporter_db.owner_url, "bk_reporter_app", "nobody_here")


def test_a_lost_database_connection_is_a_503_to_retry_and_the_pool_recovers(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usename = 'bk_reporter_app' AND datname = current_database()"
        )
    envelope = web1.envelope()
    lost = client.post("/api/v1/manifests", json=envelope)
    assert (lost.status_code, lost.json()["code"], lost.headers["retry-after"]) == (503, "unavailable", "30")
    assert client.post("/api/v1/manifests", json=envelope).status_code == 201


def test_the_applications_connections_run_without_jit(reporter_db: ReporterDatabase) -> None:
    async def jit_setting() -> str:
        reporter = Reporter(Settings(), reporter_db.app_url)
        await reporter.pool.open(wait=True)
        try:
            async with reporter.pool.connection() as conn:
                return (await (await conn.execute("SHOW jit")).fetchone())[0]
        finally:
            await reporter.pool.close()

    assert asyncio.run(jit_setting()) == "off"
