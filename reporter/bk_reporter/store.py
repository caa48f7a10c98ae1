"""Storing verified manifests: one statement per request; an answer only after COMMIT.

All manifests of a request go into events with one INSERT ... SELECT FROM json_to_recordset(...)
statement, in (host, seq) order, ON CONFLICT DO NOTHING, on an autocommit connection: the
statement is its own transaction, and the statement trigger of migrations/0002 updates the
derived state inside it. When it returns, what it inserted is committed.

The same statement inserts only rows whose signing key is, at that moment, enrolled and not
retired for the manifest's host: the verifier may have used a key from a cache (ingest_spine.KeyCache),
and a key retired since then must not let anything new in. Whatever was not inserted is then
classified: a key no longer enrolled for the host (401, as the verifier would have answered),
else against what is stored, which is committed and never changes: the same bytes (200) or a
conflict (409).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

from .ingest import EnrolledKey, VerifiedManifest, enrolment
from .outcome import Outcome

DEADLOCK_RETRIES = 3

ACTIVE_KEYS = """
SELECT fingerprint, public_key, array_agg(host ORDER BY host)
  FROM host_keys
 WHERE retired_at IS NULL AND fingerprint = ANY(%(fingerprints)s::text[])
 GROUP BY fingerprint, public_key
"""

# The rows travel as one JSON document: json.dumps builds it at C speed, where array
# parameters would cost a Python loop per column and row. Column order is events' own.
EVENT_COLUMNS = (
    ("id", "uuid"),
    ("host", "text"),
    ("seq", "bigint"),
    ("prev", "text"),
    ("sha256", "text"),
    ("kind", "text"),
    ("status", "text"),
    ("job", "text"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("key_fingerprint", "text"),
    ("repository_name", "text"),
    ("repository_url", "text"),
    ("snapshot_id", "text"),
    ("cadence_seconds", "bigint"),
    ("data_added", "bigint"),
    ("files_new", "bigint"),
    ("files_changed", "bigint"),
    ("files_unmodified", "bigint"),
    ("bytes_processed", "bigint"),
    ("lineage", "jsonb"),
    ("manifest", "text"),
    ("signature", "text"),
)
_NAMES = ", ".join(name for name, _type in EVENT_COLUMNS)
_RECORD = ", ".join(f"{name} {type_}" for name, type_ in EVENT_COLUMNS)

INSERT_EVENTS = f"""
INSERT INTO events ({_NAMES})
SELECT {_NAMES} FROM json_to_recordset(%(rows)s::json) AS incoming({_RECORD})
 WHERE EXISTS (SELECT FROM host_keys k
                WHERE k.host = incoming.host AND k.fingerprint = incoming.key_fingerprint AND k.retired_at IS NULL)
ON CONFLICT DO NOTHING
RETURNING id
"""

STORED_RIVALS = """
SELECT id, host, seq, manifest
  FROM events
 WHERE id = ANY(%(ids)s::uuid[])
    OR (host, seq) IN (SELECT * FROM unnest(%(hosts)s::text[], %(seqs)s::bigint[]))
"""


@dataclass(frozen=True)
class StoredRival:
    id: uuid.UUID
    host: str
    seq: int
    manifest: str


async def active_keys(conn: psycopg.AsyncConnection, fingerprints: Iterable[str]) -> dict[str, EnrolledKey]:
    """The enrolled, unretired keys among these fingerprints."""
    cursor = await conn.execute(ACTIVE_KEYS, {"fingerprints": sorted(set(fingerprints))})
    return {
        fingerprint: EnrolledKey(public_key=public_key, hosts=frozenset(hosts))
        for fingerprint, public_key, hosts in await cursor.fetchall()
    }


def _row(manifest: VerifiedManifest) -> dict[str, object]:
    facts = manifest.facts
    return {
        "id": str(manifest.id),
        "host": manifest.host,
        "seq": manifest.seq,
        "prev": manifest.prev,
        "sha256": manifest.sha256,
        "kind": manifest.kind,
        "status": manifest.status,
        "job": manifest.job,
        "started_at": manifest.started_at.isoformat(),
        "finished_at": manifest.finished_at.isoformat(),
        "key_fingerprint": manifest.key_fingerprint,
        "repository_name": facts.repository_name,
        "repository_url": facts.repository_url,
        "snapshot_id": facts.snapshot_id,
        "cadence_seconds": facts.cadence_seconds,
        "data_added": facts.data_added,
        "files_new": facts.files_new,
        "files_changed": facts.files_changed,
        "files_unmodified": facts.files_unmodified,
        "bytes_processed": facts.bytes_processed,
        "lineage": None if facts.lineage is None else list(facts.lineage),
        "manifest": manifest.manifest,
        "signature": manifest.signature,
    }


async def _insert(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> set[uuid.UUID]:
    rows = json.dumps([_row(m) for m in manifests], ensure_ascii=False)
    cursor = await conn.execute(INSERT_EVENTS, {"rows": rows})
    return {row[0] for row in await cursor.fetchall()}


async def _rivals(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> list[StoredRival]:
    if not manifests:
        return []
    cursor = await conn.execute(
        STORED_RIVALS,
        {"ids": [m.id for m in manifests], "hosts": [m.host for m in manifests], "seqs": [m.seq for m in manifests]},
    )
    return [StoredRival(*row) for row in await cursor.fetchall()]


def _classify(manifest: VerifiedManifest, rivals: Sequence[StoredRival], keys: dict[str, EnrolledKey]) -> Outcome:
    refused = enrolment(keys, manifest.key_fingerprint, manifest.host, manifest.manifest_id)
    if isinstance(refused, Outcome):
        return refused
    same_id = next((r for r in rivals if r.id == manifest.id), None)
    if same_id is not None and same_id.manifest == manifest.manifest:
        return Outcome(200, "duplicate", "this manifest is already stored (identical bytes)", manifest.manifest_id)
    if same_id is not None:
        return Outcome(
            409, "id_conflict", f"another manifest with id {manifest.manifest_id} is stored", manifest.manifest_id
        )
    if any(r.host == manifest.host and r.seq == manifest.seq for r in rivals):
        return Outcome(
            409,
            "seq_conflict",
            f"host {manifest.host!r} already has a different manifest with seq {manifest.seq} (a fork or a replay)",
            manifest.manifest_id,
        )
    raise RuntimeError(f"manifest {manifest.manifest_id} was neither stored nor in conflict with a stored one")


async def _store_once(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> list[Outcome]:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE or not conn.autocommit:
        raise RuntimeError("storing needs an autocommit connection outside any transaction")
    inserted = await _insert(conn, sorted(manifests, key=lambda m: (m.host, m.seq)))
    left_over = [m for m in manifests if m.id not in inserted]
    rivals = await _rivals(conn, left_over)
    keys = await active_keys(conn, (m.key_fingerprint for m in left_over)) if left_over else {}
    return [
        Outcome(201, "stored", "stored", m.manifest_id) if m.id in inserted else _classify(m, rivals, keys)
        for m in manifests
    ]


async def _store_distinct(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> list[Outcome]:
    attempt = 1
    while True:
        try:
            return await _store_once(conn, manifests)
        except psycopg.errors.DeadlockDetected:
            if attempt == DEADLOCK_RETRIES:
                raise
            attempt += 1


def _repeat(manifest: VerifiedManifest, first: VerifiedManifest, first_outcome: Outcome) -> Outcome:
    """The answer for a manifest whose id came earlier in the same call."""
    if manifest.manifest != first.manifest:
        return Outcome(
            409, "id_conflict", f"another manifest with id {manifest.manifest_id} is stored", manifest.manifest_id
        )
    if first_outcome.status in (200, 201):
        return Outcome(200, "duplicate", "this manifest is already stored (identical bytes)", manifest.manifest_id)
    return first_outcome


async def store(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> list[Outcome]:
    """Store manifests; the outcomes come in the same order, after COMMIT.

    An id that repeats is stored once: the first in order decides, the repeats are answered as
    retries (200) or conflicts (409). `conn` must be in autocommit mode (the reporter's pool
    makes its connections so).
    """
    firsts: dict[uuid.UUID, VerifiedManifest] = {}
    for manifest in manifests:
        firsts.setdefault(manifest.id, manifest)
    unique = list(firsts.values())
    stored = dict(zip((m.id for m in unique), await _store_distinct(conn, unique), strict=True)) if unique else {}
    return [stored[m.id] if firsts[m.id] is m else _repeat(m, firsts[m.id], stored[m.id]) for m in manifests]
