"""A request's envelopes through every check and into the store, answered item by item."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from . import store
from .ingest import Limits, Outcome, SignedBy, VerifiedManifest, envelope_from, signed_by
from .verifying import Verifier

IN_PROCESS = Verifier(processes=1)


@dataclass(frozen=True)
class _Candidate:
    index: int
    manifest: VerifiedManifest


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


def _candidates(
    signed: Sequence[tuple[int, SignedBy]],
    results: Sequence[VerifiedManifest | Outcome],
    outcomes: list[Outcome | None],
) -> list[_Candidate]:
    candidates = []
    for (index, _item), result in zip(signed, results, strict=True):
        if isinstance(result, Outcome):
            outcomes[index] = result
        else:
            candidates.append(_Candidate(index, result))
    return candidates


def _answer_repeats(repeats: Sequence[tuple[_Candidate, _Candidate]], outcomes: list[Outcome | None]) -> None:
    """Items repeating an id already seen earlier in the same request."""
    for repeat, first in repeats:
        manifest_id = repeat.manifest.manifest_id
        first_outcome = outcomes[first.index]
        if repeat.manifest.manifest != first.manifest.manifest:
            outcomes[repeat.index] = Outcome(
                409, "id_conflict", f"another manifest with id {manifest_id} is stored", manifest_id
            )
        elif first_outcome is not None and first_outcome.status in (200, 201):
            outcomes[repeat.index] = Outcome(
                200, "duplicate", "this manifest is already stored (identical bytes)", manifest_id
            )
        else:
            outcomes[repeat.index] = first_outcome


async def receive(
    conn: psycopg.AsyncConnection, items: Sequence[Any], limits: Limits, verifier: Verifier = IN_PROCESS
) -> list[Outcome]:
    """One Outcome per item, in order. Whatever is stored is committed when this returns."""
    outcomes: list[Outcome | None] = [None] * len(items)
    signed = _signed(items, limits, outcomes)
    if signed:
        keys = await store.active_keys(conn, (item.fingerprint for _index, item in signed))
        results = await verifier.verify([item for _index, item in signed], keys, limits)
        candidates = _candidates(signed, results, outcomes)
        firsts: dict[object, _Candidate] = {}
        repeats = []
        for candidate in candidates:
            first = firsts.setdefault(candidate.manifest.id, candidate)
            if first is not candidate:
                repeats.append((candidate, first))
        unique = list(firsts.values())
        if unique:
            stored = await store.store(conn, [c.manifest for c in unique])
            for candidate, outcome in zip(unique, stored, strict=True):
                outcomes[candidate.index] = outcome
        _answer_repeats(repeats, outcomes)
    answered = [outcome for outcome in outcomes if outcome is not None]
    if len(answered) != len(items):
        raise RuntimeError("an item of the request was left without an answer")
    return answered
