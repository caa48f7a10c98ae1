"""The ingest path: a request's envelopes through every check and into the store, answered item by item.

app.py reads the HTTP request and hands the parsed envelopes to `Ingest.receive`; scripts and
test fixtures build an `Ingest` on a connection pool of their own and do the same. The checks
run in the wire contract's order (ingest.py's docstring):

    envelope (1), size and the key the signature names (2-3)   ingest.envelope_from, signed_by
    signature, parsing, enrolment for the host, schema (3-8)    verifying.Verifier -> ingest.verify
    the enrolment again, at the moment of the INSERT            GroupWriter -> store.store
    refusals that are security events, recorded                 refusals.RefusalLog

`Ingest` owns what these need: a `KeyCache` (a request's keys would otherwise cost a query
each), the `Verifier`, a `GroupWriter` (concurrent requests share one INSERT and one commit) and
a `RefusalLog` (refused signatures and keys are recorded before they are answered).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from . import store
from .group_commit import GroupWriter
from .ingest import EnrolledKey, KeyRing, Limits, SignedBy, VerifiedManifest, envelope_from, signed_by
from .outcome import SECURITY_REFUSALS, Outcome
from .refusals import Refusal, RefusalLog, claimed_host, refusal
from .verifying import Verifier

KEY_CACHE_SECONDS = 60.0
KEY_CACHE_LIMIT = 100_000
IN_PROCESS = Verifier(processes=1)


class KeyCache:
    """Enrolled keys by fingerprint, read from the database at most every KEY_CACHE_SECONDS.

    What a cached entry can get wrong is bounded: a fingerprint names its key material exactly
    (no stale key can verify anything); a host enrolled for the key since is looked up again
    (`fresh`) before "not for this host" is answered (`Ingest._verified`); a key retired since is
    refused by store's INSERT, which checks the enrolment in the same statement. Unknown
    fingerprints are never cached.
    """

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._entries: dict[str, tuple[float, EnrolledKey]] = {}

    async def fresh(self, fingerprints: Iterable[str]) -> KeyRing:
        """The enrolled keys among these, read from the database now."""
        async with self._pool.connection() as conn:
            return await store.active_keys(conn, fingerprints)

    async def lookup(self, fingerprints: Iterable[str]) -> KeyRing:
        now = time.monotonic()
        ring: dict[str, EnrolledKey] = {}
        missing = set()
        for fingerprint in fingerprints:
            entry = self._entries.get(fingerprint)
            if entry is not None and now - entry[0] < KEY_CACHE_SECONDS:
                ring[fingerprint] = entry[1]
            else:
                missing.add(fingerprint)
        if missing:
            found = await self.fresh(missing)
            if len(self._entries) > KEY_CACHE_LIMIT:
                self._entries.clear()
            for fingerprint in missing:
                if fingerprint in found:
                    self._entries[fingerprint] = (now, found[fingerprint])
                else:
                    self._entries.pop(fingerprint, None)
            ring.update(found)
        return ring


class Ingest:
    """The ingest path of one connection pool: it owns the key cache, the verifier, the group
    writer and the refusal log, and `receive` answers a request's items."""

    def __init__(self, pool: AsyncConnectionPool, limits: Limits, verifier: Verifier = IN_PROCESS) -> None:
        self.limits = limits
        self.verifier = verifier
        self.keys = KeyCache(pool)
        self.writer = GroupWriter(pool)
        self.refusals = RefusalLog(pool.connection)

    async def receive(self, items: Sequence[Any], client: str = "") -> list[Outcome]:
        """One Outcome per item, in order, for a request from `client` (an address).

        What was stored is committed when this returns, and so are the refusals recorded.
        """
        outcomes = await self._checked_and_stored(items)
        await self.refusals.record(self._security_refusals(items, outcomes, client))
        return outcomes

    async def _checked_and_stored(self, items: Sequence[Any]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        signed = self._signed(items, outcomes)
        if signed:
            verified = []
            for (index, _item), result in zip(signed, await self._verified(signed), strict=True):
                if isinstance(result, Outcome):
                    outcomes[index] = result
                else:
                    verified.append((index, result))
            if verified:
                stored = await self.writer.store([manifest for _index, manifest in verified])
                for (index, _manifest), outcome in zip(verified, stored, strict=True):
                    outcomes[index] = outcome
        answered = [outcome for outcome in outcomes if outcome is not None]
        if len(answered) != len(items):
            raise RuntimeError("an item of the request was left without an answer")
        return answered

    def _security_refusals(self, items: Sequence[Any], outcomes: Sequence[Outcome], client: str) -> list[Refusal]:
        refused = []
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.code not in SECURITY_REFUSALS or not self.refusals.admits(client):
                continue
            envelope = envelope_from(item)  # accepted: these codes come only after it
            if isinstance(envelope, Outcome):
                continue
            signer = signed_by(envelope, self.limits)
            fingerprint = None if isinstance(signer, Outcome) else signer.fingerprint
            host = claimed_host(envelope.manifest)
            refused.append(refusal(client, outcome.code, outcome.message, host=host, fingerprint=fingerprint))
        return refused

    def _signed(self, items: Sequence[Any], outcomes: list[Outcome | None]) -> list[tuple[int, SignedBy]]:
        signed = []
        for index, item in enumerate(items):
            envelope = envelope_from(item)
            checked = envelope if isinstance(envelope, Outcome) else signed_by(envelope, self.limits)
            if isinstance(checked, Outcome):
                outcomes[index] = checked
            else:
                signed.append((index, checked))
        return signed

    async def _verified(self, signed: list[tuple[int, SignedBy]]) -> list[VerifiedManifest | Outcome]:
        items = [item for _index, item in signed]
        keys = await self.keys.lookup(item.fingerprint for item in items)
        results = await self.verifier.verify(items, keys, self.limits)
        # Cached keys may lack a host enrolled since: "not for this host" is only answered after
        # a look at the database. (A key retired since is refused by store's INSERT.)
        doubtful = [
            i for i, result in enumerate(results) if isinstance(result, Outcome) and result.code == "key_not_for_host"
        ]
        if doubtful:
            fresh = await self.keys.fresh(items[i].fingerprint for i in doubtful)
            again = await IN_PROCESS.verify([items[i] for i in doubtful], fresh, self.limits)
            for i, result in zip(doubtful, again, strict=True):
                results[i] = result
        return results
