"""Fuzzing what the existing tests do not: schemathesis over the whole OpenAPI document runs in
tests/integration/test_reporter_openapi.py, and hypothesis over SSHSIG signatures (random text,
random and mutated blobs) in tests/unit/test_sshsig.py. Here:

- the parsers the reporter runs first, over arbitrary input: only their documented errors;
- the strict manifest loader and the validator over arbitrary text and JSON: only ManifestError,
  and a list of strings;
- mutated valid manifests, signed by the enrolled key so that they pass the signature and reach
  the validator and the store, sent to a real reporter: never a 5xx, a stored row exactly when
  the answer is 201, and 201 only for what the validator accepts.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bk_evidence import manifest, sshsig
from bk_reporter import ingest
from bk_reporter.settings import Settings
from support.reporters import ONE_ADDRESS_LIMITS, LiveReporter, ReporterDatabase, enroll, run_audit, serving
from support.signing_hosts import MemoryHost

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300)
@given(text=st.text(max_size=300) | st.builds(json.dumps, JSON))
def test_loads_strict_raises_only_manifest_error(text: str) -> None:
    try:
        doc = manifest.loads_strict(text)
    except manifest.ManifestError as exc:
        assert exc.code and exc.message
    else:
        assert isinstance(doc, dict)


@settings(max_examples=300)
@given(doc=st.dictionaries(st.text(max_size=12), JSON, max_size=12))
def test_validate_returns_human_errors_for_any_object(doc: dict) -> None:
    errors = manifest.validate(doc)
    assert isinstance(errors, list) and all(isinstance(error, str) and error for error in errors)
    assert errors, "an object without the required fields is valid?"


@settings(max_examples=300)
@given(armored=st.text(max_size=400) | st.binary(max_size=400).map(sshsig.armor))
def test_the_key_in_a_signature_is_read_or_refused_with_signature_error(armored: str) -> None:
    """The reporter reads the signing key before anything else (ingest.signed_by)."""
    try:
        line = sshsig.signature_public_key(armored)
    except sshsig.SignatureError:
        return
    assert sshsig.fingerprint(line).startswith("SHA256:")


ENVELOPES = st.fixed_dictionaries(
    {"manifest": st.text(max_size=200), "signature": st.text(max_size=200) | st.binary(max_size=300).map(sshsig.armor)}
)


@settings(max_examples=400)
@given(body=st.binary(max_size=300) | st.builds(lambda value: json.dumps(value).encode(), JSON | ENVELOPES))
def test_the_reporters_first_steps_answer_any_body(body: bytes) -> None:
    limits = ingest.Limits(max_manifest_bytes=262144, future_tolerance=timedelta(seconds=300))
    parsed = ingest.parse_json_body(body)
    if isinstance(parsed, ingest.Outcome):
        assert (parsed.status, parsed.code) == (400, "not_json")
        return
    envelope = ingest.envelope_from(parsed)
    if isinstance(envelope, ingest.Outcome):
        assert envelope.status == 400
        return
    signed = ingest.signed_by(envelope, limits)
    assert not isinstance(signed, ingest.Outcome) or signed.status in (400, 401, 413)


# -- mutated valid manifests through a real reporter ----------------------------------------------

PATHS = (
    ("schema",),
    ("id",),
    ("host",),
    ("seq",),
    ("prev",),
    ("kind",),
    ("status",),
    ("started_at",),
    ("finished_at",),
    ("job",),
    ("cadence_seconds",),
    ("repository",),
    ("repository", "url"),
    ("repository", "name"),
    ("snapshot",),
    ("snapshot", "id"),
    ("stats",),
    ("stats", "data_added"),
    ("stats", "files_new"),
    ("stats", "files_changed"),
    ("stats", "files_unmodified"),
    ("stats", "total_bytes_processed"),
    ("stats", "total_duration"),
    ("error",),
    ("receipt",),
    ("offsite",),
    ("new_field",),
)


# Values at the edges of what PostgreSQL columns, JSON and the time rules hold, beside arbitrary JSON.
EDGE_VALUES = (
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -0.0,
    1.5,
    1e308,
    True,
    None,
    "",
    "\x00",
    "x" * 5000,
    "2024-02-30T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+00:00",
    "2024-01-01T00:00:00+25:00",
    "rest:https://user:pw@hub/web1/",
    [],
    {},
)
EDGES = st.sampled_from(EDGE_VALUES)


@dataclass
class Fuzzed:
    live: LiveReporter
    host: MemoryHost
    client: httpx.Client
    conn: psycopg.Connection

    def events(self) -> int:
        return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]


@pytest.fixture(scope="module")
def fuzzed(module_reporter_db: ReporterDatabase) -> Iterator[Fuzzed]:
    host = MemoryHost.named("web1")
    enroll(module_reporter_db.owner_url, host)
    with (
        serving(module_reporter_db, Settings(**ONE_ADDRESS_LIMITS)) as live,
        httpx.Client(base_url=live.url, timeout=60) as client,
        psycopg.connect(module_reporter_db.owner_url, autocommit=True) as conn,
    ):
        yield Fuzzed(live, host, client, conn)


def mutate(doc: dict[str, Any], path: tuple[str, ...], value: object, delete: bool) -> None:
    target = doc
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            return
        target = target[key]
    if delete:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(st.tuples(st.sampled_from(PATHS), EDGES | JSON, st.booleans()), min_size=1, max_size=2),
    batch=st.booleans(),
)
def test_mutated_signed_manifests_never_break_the_reporter(
    fuzzed: Fuzzed, mutations: list[tuple[tuple[str, ...], object, bool]], batch: bool
) -> None:
    send_mutated(fuzzed, mutations, batch)


def send_mutated(fuzzed: Fuzzed, mutations: list[tuple[tuple[str, ...], object, bool]], batch: bool) -> None:
    """Mutate the host's next manifest, sign it, post it: never a 5xx, a row exactly for a 201."""
    host, client = fuzzed.host, fuzzed.client
    doc = copy.deepcopy(host.document(id=str(uuid.uuid4()), seq=host.seq + 1, prev=host.prev))
    for path, value, delete in mutations:
        mutate(doc, path, value, delete)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    envelope = {"manifest": text, "signature": host.sign(text)}
    before = fuzzed.events()
    if batch:
        response = client.post("/api/v1/manifests/batch", json=[envelope])
        assert response.status_code == 200, response.text[:300]
        answer = response.json()[0]
    else:
        response = client.post("/api/v1/manifests", json=envelope)
        assert response.status_code < 500, response.text[:300]
        answer = response.json()
        assert response.status_code == answer["status"]
    assert answer["status"] in (201, 200, 401, 409, 413, 422), answer
    assert fuzzed.events() == before + (answer["status"] == 201)
    if answer["status"] == 201:
        assert manifest.validate(doc) == [], answer
        host.advance(text)


@pytest.mark.parametrize("path", PATHS, ids=[".".join(path) for path in PATHS])
def test_every_edge_value_in_every_field(fuzzed: Fuzzed, path: tuple[str, ...]) -> None:
    """The systematic part: each field of a valid manifest set to each edge value in turn."""
    for value in EDGE_VALUES:
        send_mutated(fuzzed, [(path, value, False)], batch=False)


def test_what_the_fuzzing_stored_still_reads_and_audits(fuzzed: Fuzzed) -> None:
    """Edge values that were accepted must not break the views, pages or audit that read them."""
    assert fuzzed.events() > 20
    for path in ("/api/v1/hosts", "/api/v1/hosts/web1", "/api/v1/events?limit=1000", "/metrics", "/", "/hosts/web1"):
        response = fuzzed.client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    audit = run_audit(fuzzed.live.database)
    # Accepted mutations of seq and prev are gaps and broken links, which audit must report (exit 1).
    assert audit.returncode in (0, 1) and "Traceback" not in audit.stderr, audit.stderr[-3000:]
    assert f"audited {fuzzed.events()} events" in audit.stdout, audit.stdout[-2000:]
