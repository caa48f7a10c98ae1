"""The ingest checks without a database: envelope, size, key, signature, parsing, schema, time."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bk_evidence import manifest as bk_manifest
from bk_evidence import sshsig
from bk_reporter.ingest import (
    EnrolledKey,
    Envelope,
    Limits,
    VerifiedManifest,
    envelope_from,
    extract_facts,
    parse_json_body,
    parse_time,
    signed_by,
    storable,
    verify,
)
from bk_reporter.outcome import Outcome
from support.keys import make_key, public_line

LIMITS = Limits(max_manifest_bytes=4096, future_tolerance=timedelta(minutes=5))
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_key(tmp_path_factory.mktemp("keys"), "ed25519")


def manifest_text(**fields: object) -> str:
    doc = {
        "schema": "bk.manifest/v1",
        "id": str(uuid.uuid4()),
        "host": "web1",
        "seq": 1,
        "prev": None,
        "kind": "backup",
        "status": "success",
        "started_at": "2026-06-01T09:00:00Z",
        "finished_at": "2026-06-01T11:30:00+02:00",
    }
    doc.update(fields)
    return bk_manifest.dumps(doc)


def check(key: Path, text: str, hosts: frozenset[str] = frozenset({"web1"})) -> VerifiedManifest | Outcome:
    envelope = Envelope(text, sshsig.sign(text.encode(), str(key)))
    signed = signed_by(envelope, LIMITS)
    assert not isinstance(signed, Outcome), signed
    keyring = {signed.fingerprint: EnrolledKey(sshsig.normalize_public_key(public_line(key)), hosts)}
    return verify(signed, keyring, LIMITS, NOW)


def expect(result: VerifiedManifest | Outcome, status: int, code: str) -> None:
    assert isinstance(result, Outcome), result
    assert (result.status, result.code) == (status, code), result.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xc3\x28", "not UTF-8"),
        (b"{", "not JSON"),
        (b'{"a": 1, "a": 2}', "appears twice"),
        (b"[NaN]", "not JSON"),
        (b"[" * 50000, "not JSON"),
    ],
)
def test_unreadable_bodies(body: bytes, message: str) -> None:
    outcome = parse_json_body(body)
    assert isinstance(outcome, Outcome) and outcome.status == 400 and message in outcome.message


@pytest.mark.parametrize(
    "value",
    [[], "text", {"manifest": "m"}, {"manifest": "m", "signature": "s", "x": 1}, {"manifest": 1, "signature": "s"}],
)
def test_envelopes_have_exactly_two_strings(value: object) -> None:
    outcome = envelope_from(value)
    assert isinstance(outcome, Outcome) and (outcome.status, outcome.code) == (400, "bad_envelope")


def test_a_well_signed_manifest_passes_with_every_column_extracted(key: Path) -> None:
    text = manifest_text(seq=3, prev="a" * 64, job="home", cadence_seconds=3600, stats={"data_added": 7})
    result = check(key, text)
    assert isinstance(result, VerifiedManifest)
    assert (result.host, result.seq, result.prev, result.job, result.kind) == ("web1", 3, "a" * 64, "home", "backup")
    assert result.finished_at == datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
    assert result.sha256 == bk_manifest.sha256_hex(text) and result.manifest == text
    assert (result.facts.cadence_seconds, result.facts.data_added) == (3600, 7)
    assert result.key_fingerprint == sshsig.fingerprint(public_line(key))


def test_size_is_checked_on_the_utf8_bytes() -> None:
    text = manifest_text(note="é" * 2100)
    assert len(text) < LIMITS.max_manifest_bytes < len(text.encode())
    expect(signed_by(Envelope(text, "sig"), LIMITS), 413, "too_large")


def test_lone_surrogates_cannot_have_been_signed() -> None:
    expect(signed_by(Envelope("\ud800", "sig"), LIMITS), 400, "bad_envelope")


@pytest.mark.parametrize(
    "signature", ["", "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----", "x" * 20000]
)
def test_unreadable_signatures_are_401(signature: str) -> None:
    expect(signed_by(Envelope(manifest_text(), signature), LIMITS), 401, "bad_signature")


def test_an_unenrolled_key_is_401(key: Path) -> None:
    text = manifest_text()
    signed = signed_by(Envelope(text, sshsig.sign(text.encode(), str(key))), LIMITS)
    assert not isinstance(signed, Outcome)
    expect(verify(signed, {}, LIMITS, NOW), 401, "unknown_key")


def test_a_key_enrolled_for_another_host_is_401(key: Path) -> None:
    result = check(key, manifest_text(), hosts=frozenset({"db1"}))
    expect(result, 401, "key_not_for_host")
    assert isinstance(result, Outcome) and result.manifest_id is not None


def test_the_manifest_is_parsed_only_after_the_signature_verified(key: Path) -> None:
    text = manifest_text()
    signed = signed_by(Envelope(text, sshsig.sign(b"something else", str(key))), LIMITS)
    assert not isinstance(signed, Outcome)
    keyring = {signed.fingerprint: EnrolledKey(sshsig.normalize_public_key(public_line(key)), frozenset({"web1"}))}
    expect(verify(signed, keyring, LIMITS, NOW), 401, "bad_signature")


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"kind": "party"}, "schema_violation"),
        ({"seq": 0}, "schema_violation"),
        ({"seq": 2**63}, "schema_violation"),
        ({"job": "a\x00b"}, "schema_violation"),
        ({"finished_at": "2026-06-01T08:59:59Z"}, "schema_violation"),
        ({"finished_at": "2026-06-01T12:05:01Z"}, "future_time"),
    ],
)
def test_schema_and_time_rules(key: Path, fields: dict, code: str) -> None:
    expect(check(key, manifest_text(**fields)), 422, code)


def test_a_little_clock_skew_is_tolerated(key: Path) -> None:
    assert isinstance(check(key, manifest_text(finished_at="2026-06-01T12:04:59Z")), VerifiedManifest)


def test_integral_floats_are_accepted_as_integers(key: Path) -> None:
    result = check(key, manifest_text(seq=2.0, prev="b" * 64))
    assert isinstance(result, VerifiedManifest) and result.seq == 2 and isinstance(result.seq, int)


def test_not_json_manifests_are_422(key: Path) -> None:
    expect(check(key, "[1, 2]"), 422, "manifest_not_json")


def test_lineage_of_receipts_and_offsite_copies() -> None:
    snapshot = "c" * 64
    receipt = {
        "kind": "hub-receipt",
        "repository": {"name": "web1"},
        "receipt": {"snapshots": [{"id": snapshot, "size": 10, "arrived_at": "2026-06-01T10:00:00+02:00"}, "junk"]},
    }
    facts = extract_facts(receipt)
    assert facts.repository_name == "web1" and facts.snapshot_id is None
    assert facts.lineage == ({"snapshot": snapshot, "arrived_at": "2026-06-01T10:00:00+02:00", "size": 10},)
    offsite = {"kind": "offsite-copy", "offsite": {"destination": "b2", "snapshots": [snapshot, 5]}}
    assert extract_facts(offsite).lineage == ({"snapshot": snapshot, "destination": "b2"},)
    assert extract_facts({"kind": "backup", "snapshot": {"id": snapshot}}).snapshot_id == snapshot
    assert extract_facts({"kind": "check", "snapshot": {"id": snapshot}}).snapshot_id is None


def test_figures_too_large_for_postgresql_are_not_interpreted() -> None:
    facts = extract_facts({"kind": "backup", "stats": {"data_added": 2**64, "files_new": True, "files_changed": 3.0}})
    assert (facts.data_added, facts.files_new, facts.files_changed) == (None, None, 3)


def test_storable_text() -> None:
    assert storable("web1 ü") and not storable("a\x00") and not storable("\udfff")


def test_outcomes_have_the_wire_shape() -> None:
    assert Outcome(409, "seq_conflict", "fork", "id-1").as_json() == {
        "status": 409,
        "code": "seq_conflict",
        "message": "fork",
        "id": "id-1",
    }
    assert json.dumps(Outcome(400, "x", "y").as_json()) == '{"status": 400, "code": "x", "message": "y", "id": null}'


@pytest.mark.parametrize(
    "value",
    [
        "2026-06-01T09:30:00Z",
        "2026-06-01t09:30:00z",
        "2026-06-01T09:30:00.123456789+02:00",
        "2026-06-01T09:30:00.5-05:30",
        "2026-06-01T09:30:00+23:59",
    ],
)
def test_times_are_read_as_bk_evidence_reads_them(value: str) -> None:
    reference = bk_manifest.parse_timestamp(value)
    assert reference is not None and parse_time(value) == reference
