"""The ingest path: a request's envelopes through every check and into the store, answered item by item.

app.py reads the HTTP request and hands the parsed envelopes to `Ingest.receive`; scripts and
test fixtures hand theirs to the same object built on one connection (`Ingest.on_connection`).
The checks run in the wire contract's order (ingest.py's docstring):

    envelope (1), size and the key the signature names (2-3)   ingest.envelope_from, signed_by
    signature, parsing, enrolment for the host, schema (3-8)    verifying.Verifier -> ingest.verify
    the enrolment again, at the moment of the INSERT            store.store (via the writer)
    refusals that are security events, recorded                 refusals.RefusalLog

The keys come from a `KeyCache` (a request's keys would otherwise cost a query each); the
writer is a `GroupWriter` (concurrent requests share one INSERT and one commit) or, on one
connection, `store.store` itself. A large request is verified in parts (`Verifier.parts`), and
each part goes to the writer as soon as it is verified, while the workers verify the next.
Refused signatures and keys are recorded by a `RefusalLog` before they are answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from . import store
from .group_commit import GroupWriter
from .ingest import EnrolledKey, KeyRing, Limits, SignedBy, VerifiedManifest, envelope_from, signed_by
from .outcome import SECURITY_REFUSALS, Outcome
from .refusals import Refusal, RefusalLog, claimed_host, refusal
from .verifying import Verifier

KeyLookup = Callable[[Iterable[str]], Awaitable[KeyRing]]
Writer = Callable[[Sequence[VerifiedManifest]], Awaitable[list[Outcome]]]

KEY_CACHE_SECONDS = 60.0
KEY_CACHE_LIMIT = 100_000
IN_PROCESS = Verifier(processes=1)


class KeyCache:
    """Enrolled keys by fingerprint, read from the database at most every KEY_CACHE_SECONDS.

    What a cached entry can get wrong is bounded: a fingerprint names its key material exactly
    (no stale key can verify anything); a host enrolled for the key since is looked up again
    before "not for this host" is answered (`Ingest._verified`); a key retired since is refused
    by store's INSERT, which checks the enrolment in the same statement. Unknown fingerprints
    are never cached.
    """

    def __init__(self, read: KeyLookup) -> None:
        self._read = read
        self._entries: dict[str, tuple[float, EnrolledKey]] = {}

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
            found = await self._read(missing)
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
    """Owns the key lookup, the verifier, the writer and the refusal log; `receive` answers a request's items."""

    def __init__(
        self,
        limits: Limits,
        verifier: Verifier,
        *,
        keys: KeyLookup,
        write: Writer,
        refusals: RefusalLog,
        fresh_keys: KeyLookup | None = None,
    ) -> None:
        """`keys` may answer from a cache; then `fresh_keys` reads the database itself."""
        self.limits = limits
        self.verifier = verifier
        self.refusals = refusals
        self._keys = keys
        self._fresh_keys = fresh_keys
        self._write = write

    @classmethod
    def pooled(cls, pool: AsyncConnectionPool, limits: Limits, verifier: Verifier) -> Ingest:
        """The server's: cached keys, concurrent requests stored together."""

        async def active_keys(fingerprints: Iterable[str]) -> KeyRing:
            async with pool.connection() as conn:
                return await store.active_keys(conn, fingerprints)

        return cls(
            limits,
            verifier,
            keys=KeyCache(active_keys).lookup,
            write=GroupWriter(pool).store,
            refusals=RefusalLog(pool.connection),
            fresh_keys=active_keys,
        )

    @classmethod
    def on_connection(cls, conn: psycopg.AsyncConnection, limits: Limits, verifier: Verifier = IN_PROCESS) -> Ingest:
        """On one autocommit connection, for scripts and test fixtures: no cache, one writer."""

        async def active_keys(fingerprints: Iterable[str]) -> KeyRing:
            return await store.active_keys(conn, fingerprints)

        async def write(manifests: Sequence[VerifiedManifest]) -> list[Outcome]:
            return await store.store(conn, manifests)

        @asynccontextmanager
        async def connection() -> AsyncIterator[psycopg.AsyncConnection]:
            yield conn

        return cls(limits, verifier, keys=active_keys, write=write, refusals=RefusalLog(connection))

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
            await self._verified_and_stored(signed, outcomes)
        answered = [outcome for outcome in outcomes if outcome is not None]
        if len(answered) != len(items):
            raise RuntimeError("an item of the request was left without an answer")
        return answered

    async def _verified_and_stored(self, signed: list[tuple[int, SignedBy]], outcomes: list[Outcome | None]) -> None:
        """Each part of the request is stored once verified, while the workers verify the next.

        The parts are stored one after the other, in the request's order, so that whatever an
        earlier item decides (the first of two items with one id) is committed before a later
        item is stored. A request that fails part way may leave its first parts stored: its
        retry is answered 200 for those, as for any retry.
        """
        keys = await self._keys(item.fingerprint for _index, item in signed)
        parts = self.verifier.parts([item for _index, item in signed], keys, self.limits)
        start = 0
        try:
            for part in parts:
                results = await part
                numbered = signed[start : start + len(results)]
                start += len(results)
                results = await self._rechecked([item for _index, item in numbered], results)
                await self._stored(numbered, results, outcomes)
        finally:
            # A part or a write that failed leaves the other parts running: wait for them too.
            await asyncio.gather(*parts, return_exceptions=True)

    async def _stored(
        self,
        numbered: list[tuple[int, SignedBy]],
        results: list[VerifiedManifest | Outcome],
        outcomes: list[Outcome | None],
    ) -> None:
        verified = []
        for (index, _item), result in zip(numbered, results, strict=True):
            if isinstance(result, Outcome):
                outcomes[index] = result
            else:
                verified.append((index, result))
        if verified:
            stored = await self._write([manifest for _index, manifest in verified])
            for (index, _manifest), outcome in zip(verified, stored, strict=True):
                outcomes[index] = outcome

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

    async def _rechecked(
        self, items: list[SignedBy], results: list[VerifiedManifest | Outcome]
    ) -> list[VerifiedManifest | Outcome]:
        """`results`, one per item, with "not for this host" confirmed by the database.

        Cached keys may lack a host enrolled since: that answer is only given after a look at the
        database. (A key retired since is refused by store's INSERT.)
        """
        if self._fresh_keys is None:
            return results
        doubtful = [
            i for i, result in enumerate(results) if isinstance(result, Outcome) and result.code == "key_not_for_host"
        ]
        if doubtful:
            fresh = await self._fresh_keys(items[i].fingerprint for i in doubtful)
            again = await IN_PROCESS.verify([items[i] for i in doubtful], fresh, self.limits)
            for i, result in zip(doubtful, again, strict=True):
                results[i] = result
        return results
