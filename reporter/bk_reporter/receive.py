"""A request's envelopes through every check and into the store, answered item by item."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import psycopg

from . import store
from .ingest import KeyRing, Limits, Outcome, SignedBy, VerifiedManifest, envelope_from, signed_by
from .verifying import Verifier

IN_PROCESS = Verifier(processes=1)

KeyLookup = Callable[[Iterable[str]], Awaitable[KeyRing]]
Writer = Callable[[Sequence[VerifiedManifest]], Awaitable[list[Outcome]]]


def _signed(items: Sequence[Any], limits: Limits, outcomes: list[Outcome | None]) -> list[tuple[int, SignedBy]]:
    signed = []
    for index, item in enumerate(items):
        envelope = envelope_from(item)
        checked = envelope if isinstance(envelope, Outcome) else signed_by(envelope, limits)
        if isinstance(checked, Outcome):
            outcomes[index] = checked
        else:
            signed.append((index, checked))
    return signed


async def _verified(
    signed: list[tuple[int, SignedBy]],
    lookup_keys: KeyLookup,
    fresh_keys: KeyLookup | None,
    limits: Limits,
    verifier: Verifier,
) -> list[VerifiedManifest | Outcome]:
    keys = await lookup_keys(item.fingerprint for _index, item in signed)
    results = await verifier.verify([item for _index, item in signed], keys, limits)
    if fresh_keys is None:
        return results
    # Keys from a cache may lack a host enrolled since: "not for this host" is only answered
    # after a look at the database. (A key retired since is refused by store's INSERT.)
    doubtful = [
        i for i, result in enumerate(results) if isinstance(result, Outcome) and result.code == "key_not_for_host"
    ]
    if doubtful:
        keys = await fresh_keys(signed[i][1].fingerprint for i in doubtful)
        again = await IN_PROCESS.verify([signed[i][1] for i in doubtful], keys, limits)
        for i, result in zip(doubtful, again, strict=True):
            results[i] = result
    return results


async def receive_with(
    lookup_keys: KeyLookup,
    write: Writer,
    items: Sequence[Any],
    limits: Limits,
    verifier: Verifier,
    *,
    fresh_keys: KeyLookup | None = None,
) -> list[Outcome]:
    """One Outcome per item, in order. Whatever `write` stored is committed when this returns.

    `lookup_keys` may answer from a cache; then `fresh_keys` reads the database itself.
    """
    outcomes: list[Outcome | None] = [None] * len(items)
    signed = _signed(items, limits, outcomes)
    if signed:
        results = await _verified(signed, lookup_keys, fresh_keys, limits, verifier)
        verified = []
        for (index, _item), result in zip(signed, results, strict=True):
            if isinstance(result, Outcome):
                outcomes[index] = result
            else:
                verified.append((index, result))
        if verified:
            for (index, _manifest), outcome in zip(verified, await write([m for _i, m in verified]), strict=True):
                outcomes[index] = outcome
    answered = [outcome for outcome in outcomes if outcome is not None]
    if len(answered) != len(items):
        raise RuntimeError("an item of the request was left without an answer")
    return answered


async def receive(
    conn: psycopg.AsyncConnection, items: Sequence[Any], limits: Limits, verifier: Verifier = IN_PROCESS
) -> list[Outcome]:
    """receive_with on one autocommit connection (for scripts and test fixtures)."""

    async def lookup_keys(fingerprints: Iterable[str]) -> KeyRing:
        return await store.active_keys(conn, fingerprints)

    async def write(manifests: Sequence[VerifiedManifest]) -> list[Outcome]:
        return await store.store(conn, manifests)

    return await receive_with(lookup_keys, write, items, limits, verifier)
