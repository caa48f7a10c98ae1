"""Storing verified manifests: one transaction per request; an answer only after COMMIT.

All manifests of a request go into events with one INSERT ... SELECT FROM unnest(...)
statement, in (host, seq) order, ON CONFLICT DO NOTHING. The statement trigger of
migrations/0002 updates the derived state in the same transaction. Whatever was not
inserted is then classified against what is stored: the same bytes (200) or a conflict (409).
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

INSERT_EVENTS = """
INSERT INTO events (id, host, seq, prev, sha256, kind, status, job, started_at, finished_at, key_fingerprint,
                    repository_name, repository_url, snapshot_id, cadence_seconds, data_added, files_new,
                    files_changed, files_unmodified, bytes_processed, lineage, manifest, signature)
SELECT * FROM unnest(%(id)s::uuid[], %(host)s::text[], %(seq)s::bigint[], %(prev)s::text[], %(sha256)s::text[],
                     %(kind)s::text[], %(status)s::text[], %(job)s::text[], %(started_at)s::timestamptz[],
                     %(finished_at)s::timestamptz[], %(key_fingerprint)s::text[], %(repository_name)s::text[],
                     %(repository_url)s::text[], %(snapshot_id)s::text[], %(cadence_seconds)s::bigint[],
                     %(data_added)s::bigint[], %(files_new)s::bigint[], %(files_changed)s::bigint[],
                     %(files_unmodified)s::bigint[], %(bytes_processed)s::bigint[], %(lineage)s::jsonb[],
                     %(manifest)s::text[], %(signature)s::text[])
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
    in_order = sorted(manifests, key=lambda m: (m.host, m.seq))
    async with conn.transaction():
        inserted = await _insert(conn, in_order)
        left_over = [m for m in manifests if m.id not in inserted]
        rivals = await _rivals(conn, left_over)
    return [
        Outcome(201, "stored", "stored", m.manifest_id) if m.id in inserted else _classify(m, rivals) for m in manifests
    ]


async def store(conn: psycopg.AsyncConnection, manifests: Sequence[VerifiedManifest]) -> list[Outcome]:
    """Store manifests with distinct ids; the outcomes come in the same order, after COMMIT."""
    attempt = 1
    while True:
        try:
            return await _store_once(conn, manifests)
        except psycopg.errors.DeadlockDetected:
            if attempt == DEADLOCK_RETRIES:
                raise
            attempt += 1
