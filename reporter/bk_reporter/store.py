"""Storing verified manifests: one statement per request; an answer only after COMMIT.

All manifests of a request go into events with one INSERT ... SELECT FROM unnest(...)
statement, in (host, seq) order, ON CONFLICT DO NOTHING, on an autocommit connection: the
statement is its own transaction, and the statement trigger of migrations/0002 updates the
derived state inside it. When it returns, what it inserted is committed. Whatever was not
inserted is then classified against what is stored, which is committed and never changes:
the same bytes (200) or a conflict (409).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from .ingest import EnrolledKey, Outcome, VerifiedManifest

DEADLOCK_RETRIES = 3

ACTIVE_KEYS = """
SELECT fingerprint, public_key, array_agg(host ORDER BY host)
  FROM host_keys
 WHERE retired_at IS NULL AND fingerprint = ANY(%(fingerprints)s::text[])
 GROUP BY fingerprint, public_key
"""

# Parameters in binary (%b): text-format arrays of long strings cost ~20 times more to build.
INSERT_EVENTS = """
INSERT INTO events (id, host, seq, prev, sha256, kind, status, job, started_at, finished_at, key_fingerprint,
                    repository_name, repository_url, snapshot_id, cadence_seconds, data_added, files_new,
                    files_changed, files_unmodified, bytes_processed, lineage, manifest, signature)
SELECT * FROM unnest(%(id)b::uuid[], %(host)b::text[], %(seq)b::bigint[], %(prev)b::text[], %(sha256)b::text[],
                     %(kind)b::text[], %(status)b::text[], %(job)b::text[], %(started_at)b::timestamptz[],
                     %(finished_at)b::timestamptz[], %(key_fingerprint)b::text[], %(repository_name)b::text[],
                     %(repository_url)b::text[], %(snapshot_id)b::text[], %(cadence_seconds)b::bigint[],
                     %(data_added)b::bigint[], %(files_new)b::bigint[], %(files_changed)b::bigint[],
                     %(files_unmodified)b::bigint[], %(bytes_processed)b::bigint[], %(lineage)b::jsonb[],
                     %(manifest)b::text[], %(signature)b::text[])
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


def _columns(manifests: Sequence[VerifiedManifest]) -> dict[str, list[object]]:
    def column(name: str) -> list[object]:
        return [getattr(m, name) for m in manifests]

    def fact(name: str) -> list[object]:
        return [getattr(m.facts, name) for m in manifests]

    columns = {name: column(name) for name in ("id", "host", "seq", "prev", "sha256", "kind", "status", "job")}
    columns |= {name: column(name) for name in ("started_at", "finished_at", "key_fingerprint", "manifest")}
    columns["signature"] = column("signature")
    for name in ("repository_name", "repository_url", "snapshot_id", "cadence_seconds", "data_added", "files_new"):
        columns[name] = fact(name)
    for name in ("files_changed", "files_unmodified", "bytes_processed"):
        columns[name] = fact(name)
    columns["lineage"] = [None if m.facts.lineage is None else Jsonb(list(m.facts.lineage)) for m in manifests]
    return columns


async def _insert(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> set[uuid.UUID]:
    cursor = await conn.execute(INSERT_EVENTS, _columns(manifests))
    return {row[0] for row in await cursor.fetchall()}


async def _rivals(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> list[StoredRival]:
    if not manifests:
        return []
    cursor = await conn.execute(
        STORED_RIVALS,
        {"ids": [m.id for m in manifests], "hosts": [m.host for m in manifests], "seqs": [m.seq for m in manifests]},
    )
    return [StoredRival(*row) for row in await cursor.fetchall()]


def _classify(manifest: VerifiedManifest, rivals: Sequence[StoredRival]) -> Outcome:
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
    return [
        Outcome(201, "stored", "stored", m.manifest_id) if m.id in inserted else _classify(m, rivals) for m in manifests
    ]


async def store(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> list[Outcome]:
    """Store manifests with distinct ids; the outcomes come in the same order, after COMMIT.

    `conn` must be in autocommit mode (the reporter's pool makes its connections so).
    """
    attempt = 1
    while True:
        try:
            return await _store_once(conn, manifests)
        except psycopg.errors.DeadlockDetected:
            if attempt == DEADLOCK_RETRIES:
                raise
            attempt += 1
