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


async def receive_with(
    lookup_keys: KeyLookup, write: Writer, items: Sequence[Any], limits: Limits, verifier: Verifier
) -> list[Outcome]:
    """One Outcome per item, in order. Whatever `write` stored is committed when this returns."""
    outcomes: list[Outcome | None] = [None] * len(items)
    signed = _signed(items, limits, outcomes)
    if signed:
        keys = await lookup_keys(item.fingerprint for _index, item in signed)
        results = await verifier.verify([item for _index, item in signed], keys, limits)
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
