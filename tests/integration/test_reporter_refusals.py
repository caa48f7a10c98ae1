"""Refused signatures and keys are stored (issue 16), over HTTP against real PostgreSQL.

Every manifest refused with a security code leaves a row in `refusals` (never its body); other
refusals leave none; the rows are append-only; a flood is recorded up to its budget and the
rest counted. The notification they cause: tests/integration/test_notify_delivery.py.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from bk_evidence import sshsig
from bk_reporter.refusals import RECORDED_PER_MINUTE
from support.database import refused_to_the_owner_unless_in_maintenance
from support.keys import make_key
from support.reporters import LiveReporter, ReporterDatabase, enroll, serving
from support.signing_hosts import MemoryHost, SigningHost


def refusal_rows(url: str) -> list[dict]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM refusals ORDER BY id").fetchall()


def fingerprint(envelope: dict[str, str]) -> str:
    return sshsig.parse(envelope["signature"]).fingerprint()


def test_each_refused_signature_or_key_is_a_row_without_the_body(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    stranger = SigningHost("web1", make_key(tmp_path, "stranger")).envelope()
    db1 = SigningHost("db1", make_key(tmp_path, "db1"))
    enroll(reporter.database.owner_url, db1)
    text = SigningHost("web2", db1.key).text()
    not_for_host = {"manifest": text, "signature": db1.sign(text)}
    garbage = {"manifest": web1.text(), "signature": "hello"}
    not_json = {"manifest": "not json", "signature": web1.sign("not json")}
    answers = [client.post("/api/v1/manifests", json=e) for e in (stranger, not_for_host, garbage, not_json)]
    batch = client.post("/api/v1/manifests/batch", json=[web1.envelope(), stranger])
    assert [a.json()["code"] for a in answers] == [
        "unknown_key",
        "key_not_for_host",
        "bad_signature",
        "manifest_not_json",
    ]
    assert [item["code"] for item in batch.json()] == ["stored", "unknown_key"]

    rows = refusal_rows(reporter.database.owner_url)  # committed before the answers were sent
    assert [(r["client"], r["code"], r["claimed_host"], r["key_fingerprint"]) for r in rows] == [
        ("127.0.0.1", "unknown_key", "web1", fingerprint(stranger)),
        ("127.0.0.1", "key_not_for_host", "web2", fingerprint(not_for_host)),
        ("127.0.0.1", "bad_signature", "web1", None),
        ("127.0.0.1", "unknown_key", "web1", fingerprint(stranger)),
    ]
    assert [r["message"] for r in rows[:3]] == [a.json()["message"] for a in answers[:3]]
    assert all(r["received_at"] is not None for r in rows)
    for row in rows:
        for envelope in (stranger, not_for_host, garbage):
            assert envelope["manifest"] not in map(str, row.values())
            assert envelope["signature"] not in map(str, row.values())


APP_MAY_NOT = ["UPDATE refusals SET code = 'x'", "DELETE FROM refusals", "TRUNCATE refusals"]


@pytest.mark.parametrize("statement", APP_MAY_NOT)
def test_refusals_are_append_only_even_for_the_owner(
    statement: str, client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    assert client.post("/api/v1/manifests", json={"manifest": web1.text(), "signature": "x"}).status_code == 401
    with psycopg.connect(reporter.database.app_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)
    refused_to_the_owner_unless_in_maintenance(reporter.database.owner_url, statement)
    left = refusal_rows(reporter.database.owner_url)  # changed only in the maintenance session
    assert [r["code"] for r in left] == (["x"] if statement.startswith("UPDATE") else [])


def test_a_flood_is_recorded_up_to_its_budget_and_the_rest_counted(reporter_db: ReporterDatabase) -> None:
    stranger = MemoryHost.named("web1")  # not enrolled
    flood = [stranger.envelope() for _index in range(RECORDED_PER_MINUTE + 25)]
    good = MemoryHost.named("db1")
    enroll(reporter_db.owner_url, good)
    with serving(reporter_db) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        answers = client.post("/api/v1/manifests/batch", json=flood).json()
        stored = client.post("/api/v1/manifests", json=good.envelope())
    # The server has stopped: it wrote the count of what it did not record on the way out.
    assert {item["code"] for item in answers} == {"unknown_key"} and stored.status_code == 201
    rows = refusal_rows(reporter_db.owner_url)
    assert [r["code"] for r in rows].count("unknown_key") == RECORDED_PER_MINUTE
    (dropped,) = [r for r in rows if r["code"] == "refusals_dropped"]
    assert dropped["client"] == "127.0.0.1" and dropped["claimed_host"] is None
    assert dropped["message"].startswith("25 further refusal(s) from this client not recorded")
