"""Every answer of the ingest contract, over HTTP, against real PostgreSQL.

Each rejected request is followed by row counts of every table: nothing at all was written.
Signatures are made by stock `ssh-keygen -Y sign`.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bk_evidence import manifest as bk_manifest
from bk_reporter import verifying
from bk_reporter.settings import Settings
from support.database import row_counts, stored_ids
from support.keys import make_key, ssh_keygen_sign
from support.reporters import LiveReporter, ReporterDatabase, enroll, serving
from support.signing_hosts import SigningHost, rfc3339


def post(client: httpx.Client, envelope: object) -> httpx.Response:
    return client.post("/api/v1/manifests", json=envelope)


def assert_answer(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


def stored_row(reporter: LiveReporter, manifest_id: str) -> dict:
    with psycopg.connect(reporter.database.owner_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM events WHERE id = %s", (manifest_id,)).fetchone()


# -- 201, 200, 409 -----------------------------------------------------------------------------


def test_a_manifest_signed_by_ssh_keygen_with_an_enrolled_key_is_stored(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    envelope = web1.envelope()
    body = assert_answer(post(client, envelope), 201, "stored")
    doc = json.loads(envelope["manifest"])
    assert body["id"] == doc["id"]
    row = stored_row(reporter, doc["id"])
    assert row["manifest"] == envelope["manifest"] and row["signature"] == envelope["signature"]
    assert (row["host"], row["seq"], row["prev"], row["kind"], row["status"], row["job"]) == (
        "web1",
        1,
        None,
        "backup",
        "success",
        "home",
    )
    assert row["sha256"] == bk_manifest.sha256_hex(envelope["manifest"])
    assert row["snapshot_id"] == doc["snapshot"]["id"]
    assert row["repository_url"] == doc["repository"]["url"]
    assert (row["data_added"], row["files_new"], row["bytes_processed"], row["cadence_seconds"]) == (
        1234,
        3,
        98765,
        86400,
    )
    assert row["key_fingerprint"].startswith("SHA256:")
    assert row["received_at"] >= row["finished_at"]


def test_every_key_type_ssh_keygen_makes_is_accepted(
    client: httpx.Client, reporter: LiveReporter, tmp_path: Path
) -> None:
    for key_type in ("ed25519", "ecdsa", "rsa"):
        host = SigningHost(f"host-{key_type}", make_key(tmp_path, key_type, key_type))
        enroll(reporter.database.owner_url, host)
        assert_answer(post(client, host.envelope()), 201, "stored")


def test_both_manifest_versions_are_stored_and_no_other(client: httpx.Client, web1: SigningHost) -> None:
    assert_answer(post(client, web1.envelope(schema="bk.manifest/v1")), 201, "stored")
    newer_stats = {"data_added": 10, "data_added_packed": 8, "backup_start": "2026-12-03T10:26:43.612085337Z"}
    newer = web1.envelope(schema="bk.manifest/v1.1", stats=newer_stats, error={"cause": "incomplete_snapshot"})
    assert_answer(post(client, newer), 201, "stored")
    unknown = web1.text(schema="bk.manifest/v2")
    assert_answer(post(client, {"manifest": unknown, "signature": web1.sign(unknown)}), 422, "schema_violation")


def test_a_retry_with_identical_bytes_answers_200_and_stores_nothing(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    envelope = web1.envelope()
    assert_answer(post(client, envelope), 201, "stored")
    before = row_counts(reporter.database.owner_url)
    body = assert_answer(post(client, envelope), 200, "duplicate")
    assert body["id"] == json.loads(envelope["manifest"])["id"]
    assert row_counts(reporter.database.owner_url) == before


def test_concurrent_retries_store_once(client: httpx.Client, reporter: LiveReporter, web1: SigningHost) -> None:
    envelope = web1.envelope()
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _attempt: post(client, envelope).status_code, range(16)))
    assert statuses == [200] * 15 + [201]
    assert row_counts(reporter.database.owner_url)["events"] == 1


def test_same_id_other_content_is_a_409(client: httpx.Client, reporter: LiveReporter, web1: SigningHost) -> None:
    first = web1.envelope()
    assert_answer(post(client, first), 201, "stored")
    doc = json.loads(first["manifest"])
    before = row_counts(reporter.database.owner_url)
    other = web1.text(id=doc["id"], status="failure")
    assert_answer(post(client, web1.envelope(other)), 409, "id_conflict")
    assert row_counts(reporter.database.owner_url) == before


def test_same_host_and_seq_other_content_is_a_409(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    assert_answer(post(client, web1.envelope()), 201, "stored")
    before = row_counts(reporter.database.owner_url)
    fork = web1.text(seq=1, prev=None, status="failure")
    body = assert_answer(post(client, web1.envelope(fork)), 409, "seq_conflict")
    assert body["id"] == json.loads(fork)["id"]
    assert row_counts(reporter.database.owner_url) == before


def test_late_arrivals_are_accepted_and_marked_by_received_at(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    envelope = web1.envelope(ago=timedelta(days=20))
    assert_answer(post(client, envelope), 201, "stored")
    row = stored_row(reporter, json.loads(envelope["manifest"])["id"])
    assert row["received_at"] - row["finished_at"] > timedelta(days=19)


# -- rejections: nothing written ------------------------------------------------------------------

Rejection = Callable[[SigningHost, Path], tuple[object, int, str]]


def _changed_byte(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    envelope = host.envelope()
    envelope["manifest"] = envelope["manifest"].replace('"success"', '"warning"')
    return envelope, 401, "bad_signature"


def _truncated_signature(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    envelope = host.envelope()
    lines = envelope["signature"].splitlines()
    envelope["signature"] = "\n".join([*lines[:2], lines[-1]])
    return envelope, 401, "bad_signature"


def _wrong_namespace(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text()
    return {"manifest": text, "signature": host.sign(text, namespace="file")}, 401, "bad_signature"


def _garbage_signature(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    return {"manifest": host.text(), "signature": "hello"}, 401, "bad_signature"


def _unknown_key(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    stranger = SigningHost(host.name, make_key(tmp, "stranger"))
    return stranger.envelope(), 401, "unknown_key"


def _another_hosts_key(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = SigningHost("db1", host.key).text()
    return {"manifest": text, "signature": host.sign(text)}, 401, "key_not_for_host"


def _not_json_manifest(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = "not json at all"
    return {"manifest": text, "signature": host.sign(text)}, 422, "manifest_not_json"


def _duplicate_keys_in_manifest(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text()[:-1] + ',"status":"failure"}'
    return {"manifest": text, "signature": host.sign(text)}, 422, "manifest_not_json"


def _nan_in_manifest(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text()[:-1] + ',"x":NaN}'
    return {"manifest": text, "signature": host.sign(text)}, 422, "manifest_not_json"


def _too_deep_manifest(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text()[:-1] + ',"x":' + "[" * 40 + "]" * 40 + "}"
    return {"manifest": text, "signature": host.sign(text)}, 422, "manifest_not_json"


def _missing_fields(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text(status=None)
    return {"manifest": text, "signature": host.sign(text)}, 422, "schema_violation"


def _wrong_types(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text(seq="1")
    return {"manifest": text, "signature": host.sign(text)}, 422, "schema_violation"


def _finished_before_started(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    now = datetime.now(UTC)
    text = host.text(started_at=rfc3339(now), finished_at=rfc3339(now - timedelta(minutes=1)))
    return {"manifest": text, "signature": host.sign(text)}, 422, "schema_violation"


def _from_the_future(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text(ago=timedelta(minutes=-10))
    return {"manifest": text, "signature": host.sign(text)}, 422, "future_time"


def _seq_beyond_bigint(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text(seq=2**64)
    return {"manifest": text, "signature": host.sign(text)}, 422, "schema_violation"


def _manifest_too_large(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    text = host.text(padding="x" * (256 * 1024))
    return {"manifest": text, "signature": host.sign(text)}, 413, "too_large"


def _extra_envelope_key(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    return {**host.envelope(), "host": host.name}, 400, "bad_envelope"


def _missing_signature(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    return {"manifest": host.text()}, 400, "bad_envelope"


def _envelope_not_object(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    return [host.envelope()], 400, "bad_envelope"


def _manifest_not_string(host: SigningHost, tmp: Path) -> tuple[object, int, str]:
    return {"manifest": host.document(), "signature": "x"}, 400, "bad_envelope"


REJECTIONS: dict[str, Rejection] = {
    "changed byte": _changed_byte,
    "truncated signature": _truncated_signature,
    "wrong namespace": _wrong_namespace,
    "garbage signature": _garbage_signature,
    "unknown key": _unknown_key,
    "another host's key": _another_hosts_key,
    "manifest not JSON": _not_json_manifest,
    "duplicate keys in manifest": _duplicate_keys_in_manifest,
    "NaN in manifest": _nan_in_manifest,
    "manifest nested too deep": _too_deep_manifest,
    "missing fields": _missing_fields,
    "wrong types": _wrong_types,
    "finished before started": _finished_before_started,
    "from the future": _from_the_future,
    "seq beyond bigint": _seq_beyond_bigint,
    "manifest over 256 KiB": _manifest_too_large,
    "extra envelope key": _extra_envelope_key,
    "missing signature": _missing_signature,
    "envelope not an object": _envelope_not_object,
    "manifest not a string": _manifest_not_string,
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejections_write_nothing(
    case: str, client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    assert_answer(post(client, web1.envelope()), 201, "stored")
    envelope, status, code = REJECTIONS[case](web1, tmp_path)
    before = row_counts(reporter.database.owner_url)
    assert_answer(post(client, envelope), status, code)
    assert row_counts(reporter.database.owner_url) == before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe\x00{}", "not_json"),
        (b'{"manifest": "a", "manifest": "b", "signature": "c"}', "not_json"),
        (b"[" * 100000, "not_json"),
        (b"", "not_json"),
    ],
    ids=["broken", "not utf-8", "duplicate keys", "deep nesting", "empty"],
)
def test_unreadable_bodies_are_400_and_write_nothing(
    body: bytes, code: str, client: httpx.Client, reporter: LiveReporter
) -> None:
    before = row_counts(reporter.database.owner_url)
    for path in ("/api/v1/manifests", "/api/v1/manifests/batch"):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert_answer(response, 400, code)
    assert row_counts(reporter.database.owner_url) == before


def test_a_retired_key_no_longer_verifies(client: httpx.Client, reporter: LiveReporter, web1: SigningHost) -> None:
    assert_answer(post(client, web1.envelope()), 201, "stored")
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        conn.execute("UPDATE host_keys SET retired_at = now() WHERE host = 'web1'")
    before = row_counts(reporter.database.owner_url)
    assert_answer(post(client, web1.envelope()), 401, "unknown_key")
    assert row_counts(reporter.database.owner_url) == before


def test_a_key_retired_while_cached_stops_new_manifests_but_not_idempotent_answers(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    """The reporter caches enrolled keys; a retirement still holds from the next INSERT on."""
    first = web1.envelope()
    assert_answer(post(client, first), 201, "stored")  # the key is now in the cache
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        conn.execute("UPDATE host_keys SET retired_at = now() WHERE host = 'web1'")
    before = row_counts(reporter.database.owner_url)
    batch = client.post("/api/v1/manifests/batch", json=[web1.envelope(), first])
    assert [(item["status"], item["code"]) for item in batch.json()] == [(401, "unknown_key"), (401, "unknown_key")]
    assert_answer(post(client, first), 401, "unknown_key")
    assert row_counts(reporter.database.owner_url) == before


def test_a_key_enrolled_for_another_host_while_cached_is_accepted_for_it(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    assert_answer(post(client, web1.envelope()), 201, "stored")  # the key is now in the cache
    db1 = SigningHost("db1", web1.key)
    assert_answer(post(client, db1.envelope()), 401, "key_not_for_host")
    enroll(reporter.database.owner_url, db1)
    assert_answer(post(client, db1.envelope()), 201, "stored")


def test_manifests_with_nul_escapes_are_stored_and_pages_still_show(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    """PostgreSQL's JSON functions refuse \\u0000; the manifest is still valid and is stored verbatim."""
    plain = web1.envelope(note="a\x00b")
    assert "\\u0000" in plain["manifest"]
    assert_answer(post(client, plain), 201, "stored")
    prune = web1.envelope(
        kind="prune",
        status="failure",
        repository={"name": "db1"},
        prune={"remaining_size": "12.000 MiB"},
        error={"message": "restic said \x00"},
        snapshot=None,
    )
    unreadable_size = web1.envelope(
        kind="prune", repository={"name": "web2"}, prune={"remaining_size": "1\x00 MiB"}, snapshot=None
    )
    batch = client.post("/api/v1/manifests/batch", json=[prune, unreadable_size])
    assert [(item["status"], item["code"]) for item in batch.json()] == [(201, "stored"), (201, "stored")]
    assert stored_row(reporter, json.loads(plain["manifest"])["id"])["manifest"] == plain["manifest"]
    with psycopg.connect(reporter.database.owner_url) as conn:
        sizes = {
            row[0]: row[1:]
            for row in conn.execute("SELECT repository_name, size_bytes, size_text FROM repository_sizes")
        }
    assert sizes == {"db1": (12582912, "12.000 MiB"), "web2": (None, "1\ufffd MiB")}
    for path in ("/hosts/web1", "/api/v1/hosts/web1", f"/events/{json.loads(prune['manifest'])['id']}"):
        assert client.get(path).status_code == 200, path


def test_ingest_answers_carry_the_same_headers_as_every_answer(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    """The ingest routes are answered before Starlette's middleware: same headers, other methods as before."""
    page = client.get("/api/v1/hosts")
    for response in (
        post(client, web1.envelope()),
        client.post("/api/v1/manifests/batch", json=[web1.envelope()]),
        client.post("/api/v1/manifests", content=b"{"),
    ):
        assert response.headers["content-type"] == "application/json"
        for name in ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options"):
            assert response.headers[name] == page.headers[name]
    assert_answer(client.get("/api/v1/manifests"), 405, "method_not_allowed")
    assert client.post("/api/v1/manifests/").status_code == 307  # starlette redirects to the route, as before


def test_an_oversized_body_is_refused_from_its_declared_length(client: httpx.Client, reporter: LiveReporter) -> None:
    before = row_counts(reporter.database.owner_url)
    huge = b'{"manifest": "' + b"x" * (600 * 1024) + b'", "signature": "x"}'
    assert_answer(client.post("/api/v1/manifests", content=huge), 413, "too_large")
    batch = b"[" + b'"' + b"x" * (8 * 1024 * 1024) + b'"]'
    assert_answer(client.post("/api/v1/manifests/batch", content=batch), 413, "too_large")
    assert row_counts(reporter.database.owner_url) == before


def test_an_oversized_body_without_a_length_is_counted_while_read(client: httpx.Client, reporter: LiveReporter) -> None:
    def chunks() -> object:
        for _chunk in range(1024):
            yield b"x" * 1024

    before = row_counts(reporter.database.owner_url)
    assert_answer(client.post("/api/v1/manifests", content=chunks()), 413, "too_large")
    assert row_counts(reporter.database.owner_url) == before


# -- batches -------------------------------------------------------------------------------------


def test_a_batch_answers_each_item_in_order(client: httpx.Client, reporter: LiveReporter, web1: SigningHost) -> None:
    stored_before = web1.envelope()
    assert_answer(post(client, stored_before), 201, "stored")
    second, third = web1.envelope(), web1.envelope()
    conflicting = web1.envelope(web1.text(seq=2, prev=bk_manifest.sha256_hex(web1.texts[0]), status="failure"))
    forged = {"manifest": web1.text(seq=9), "signature": web1.envelope(web1.text(seq=9))["signature"]}
    batch = [second, {"bad": 1}, stored_before, third, conflicting, forged, 42]
    response = client.post("/api/v1/manifests/batch", json=batch)
    assert response.status_code == 200
    results = response.json()
    assert [(r["status"], r["code"]) for r in results] == [
        (201, "stored"),
        (400, "bad_envelope"),
        (200, "duplicate"),
        (201, "stored"),
        (409, "seq_conflict"),
        (401, "bad_signature"),
        (400, "bad_envelope"),
    ]
    expected_ids = [json.loads(e["manifest"])["id"] for e in (second, stored_before, third, conflicting)]
    assert [r["id"] for r in results] == [expected_ids[0], None, *expected_ids[1:], None, None]
    assert all(set(r) == {"status", "code", "message", "id"} for r in results)
    assert row_counts(reporter.database.owner_url)["events"] == 3


def test_a_batch_repeating_an_item_stores_it_once(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    envelope = web1.envelope()
    response = client.post("/api/v1/manifests/batch", json=[envelope, envelope])
    assert [r["status"] for r in response.json()] == [201, 200]
    assert row_counts(reporter.database.owner_url)["events"] == 1


def test_batches_that_are_not_lists_or_too_long_write_nothing(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    before = row_counts(reporter.database.owner_url)
    assert_answer(client.post("/api/v1/manifests/batch", json=web1.envelope()), 400, "not_a_list")
    assert_answer(client.post("/api/v1/manifests/batch", json=[1] * 5001), 413, "too_many_items")
    assert row_counts(reporter.database.owner_url) == before
    assert client.post("/api/v1/manifests/batch", json=[]).json() == []


def test_a_mixed_batch_from_several_hosts_in_any_order_keeps_every_chain(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    db1 = SigningHost("db1", make_key(tmp_path, "db1"))
    enroll(reporter.database.owner_url, db1)
    envelopes = [host.envelope() for _n in range(5) for host in (web1, db1)]
    response = client.post("/api/v1/manifests/batch", json=list(reversed(envelopes)))
    assert [r["status"] for r in response.json()] == [201] * 10
    with psycopg.connect(reporter.database.owner_url) as conn:
        chains = conn.execute("SELECT host, events, last_seq FROM host_chain ORDER BY host").fetchall()
        breaks = conn.execute("SELECT count(*) FROM chain_breaks").fetchone()
    assert chains == [("db1", 5, 5), ("web1", 5, 5)]
    assert breaks == (0,)


def test_ssh_keygen_verifies_what_the_reporter_stored(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, tmp_path: Path
) -> None:
    envelope = web1.envelope()
    assert_answer(post(client, envelope), 201, "stored")
    row = stored_row(reporter, json.loads(envelope["manifest"])["id"])
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"web1 {web1.public_line}\n")
    (tmp_path / "m.sig").write_text(row["signature"])
    verified = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(signers),
            "-I",
            "web1",
            "-n",
            "bk-manifest@v1",
            "-s",
            str(tmp_path / "m.sig"),
        ],
        input=row["manifest"].encode(),
        capture_output=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr


def test_the_signature_covers_the_manifest_text_exactly(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost
) -> None:
    text = web1.text()
    pretty = json.dumps(json.loads(text), indent=2)
    envelope = {"manifest": pretty, "signature": ssh_keygen_sign(web1.key, text)}
    assert_answer(post(client, envelope), 401, "bad_signature")


def test_a_large_batch_is_verified_in_worker_processes_and_answered_in_order(
    reporter_db: ReporterDatabase, web1: SigningHost, tmp_path: Path
) -> None:
    db1 = SigningHost("db1", make_key(tmp_path, "db1", "ecdsa"))
    enroll(reporter_db.owner_url, db1)
    envelopes = [host.envelope() for _n in range(20) for host in (web1, db1)]
    forged = {"manifest": web1.text(seq=99), "signature": envelopes[0]["signature"]}
    batch = [*envelopes[:17], forged, envelopes[3], *envelopes[17:]]
    with (
        serving(reporter_db, Settings(verify_processes=2)) as live,
        httpx.Client(base_url=live.url, timeout=120) as http,
    ):
        results = http.post("/api/v1/manifests/batch", json=batch).json()
    expected = [201] * 17 + [401, 200] + [201] * 23
    assert [r["status"] for r in results] == expected
    assert [r["id"] for r in results[:17]] == [json.loads(e["manifest"])["id"] for e in envelopes[:17]]
    assert row_counts(reporter_db.owner_url)["events"] == 40


def test_a_batch_in_several_parts_stores_exactly_its_good_items_in_order(
    reporter_db: ReporterDatabase, web1: SigningHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts of 8 (verifying.PART_ITEMS) are stored as they are verified: the bad items of any
    part are answered and left out, the good ones of every part stored, a repeat in a later part
    answered as the retry or the conflict it is, and every answer lands at its own item."""
    monkeypatch.setattr(verifying, "PART_ITEMS", 8)
    db1 = SigningHost("db1", make_key(tmp_path, "db1"))
    enroll(reporter_db.owner_url, db1)
    good = [host.envelope() for _n in range(12) for host in (web1, db1)]
    first = json.loads(good[0]["manifest"])
    same_id = web1.envelope(web1.text(id=first["id"], seq=50))
    forged = {"manifest": web1.text(seq=60), "signature": good[5]["signature"]}
    batch = [*good[:3], forged, *good[3:13], {"manifest": "x"}, good[0], *good[13:], same_id]
    with (
        serving(reporter_db, Settings(verify_processes=2)) as live,
        httpx.Client(base_url=live.url, timeout=120) as http,
    ):
        results = http.post("/api/v1/manifests/batch", json=batch).json()
    assert [(r["status"], r["code"]) for r in results] == [
        *[(201, "stored")] * 3,
        (401, "bad_signature"),
        *[(201, "stored")] * 10,
        (400, "bad_envelope"),
        (200, "duplicate"),
        *[(201, "stored")] * 11,
        (409, "id_conflict"),
    ]
    ids = [json.loads(e["manifest"])["id"] for e in good]
    assert [r["id"] for r in results] == [*ids[:3], None, *ids[3:13], None, ids[0], *ids[13:], first["id"]]
    assert sorted(stored_ids(reporter_db.owner_url)) == sorted(ids)
    with psycopg.connect(reporter_db.owner_url) as conn:
        chains = conn.execute("SELECT host, events, last_seq FROM host_chain ORDER BY host").fetchall()
        breaks = conn.execute("SELECT count(*) FROM chain_breaks").fetchone()
    assert chains == [("db1", 12, 12), ("web1", 12, 12)]
    assert breaks == (0,)


def _certificate_for_loopback(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bk reporter test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_manifests_arrive_over_https_verified_against_the_ca(
    reporter_db: ReporterDatabase, web1: SigningHost, tmp_path: Path
) -> None:
    cert, key = _certificate_for_loopback(tmp_path)
    with serving(reporter_db, ssl_certfile=str(cert), ssl_keyfile=str(key)) as live:
        assert live.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=live.url, verify=ssl.create_default_context(cafile=str(cert)), timeout=60) as https:
            assert_answer(post(https, web1.envelope()), 201, "stored")
        with httpx.Client(base_url=live.url) as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get("/healthz")
