"""Verifying the signed items of a request: a few on the event loop, many in worker processes.

Checking a manifest (signature, strict parsing, schema) costs about half a millisecond of pure
Python. A batch of hundreds would hold the event loop, and one process, for that long; from
PARALLEL_FROM items on, the work is split between worker processes so that every core helps.

A large batch is split into parts of at most PART_ITEMS, each awaitable on its own
(`Verifier.parts`), so that the first part can be stored while the workers verify the rest:
PostgreSQL and the verifying workers then use the cores at the same time rather than in turn.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Awaitable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

from .ingest import EnrolledKey, KeyRing, Limits, SignedBy, VerifiedManifest, verify
from .outcome import Outcome

PARALLEL_FROM = 16
PART_ITEMS = 125

Results = list[VerifiedManifest | Outcome]


def verify_all(
    items: Sequence[SignedBy], keys: KeyRing, limits: Limits, now: datetime
) -> list[VerifiedManifest | Outcome]:
    return [verify(item, keys, limits, now) for item in items]


def _ring_for(items: Sequence[SignedBy], keys: KeyRing) -> dict[str, EnrolledKey]:
    """The keys these items name: all that a worker needs, and all that is sent to it."""
    return {item.fingerprint: keys[item.fingerprint] for item in items if item.fingerprint in keys}


def _done(results: Results) -> Awaitable[Results]:
    future: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
    future.set_result(results)
    return future


def _started_worker() -> None:
    """Run in a worker process: nothing to do once it has started and imported this module."""


class Verifier:
    """Runs `verify` for a request's items, in `processes` worker processes when there are many."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def verify(self, items: Sequence[SignedBy], keys: KeyRing, limits: Limits) -> Results:
        return [result for part in self.parts(items, keys, limits) for result in await part]

    def parts(self, items: Sequence[SignedBy], keys: KeyRing, limits: Limits) -> list[Awaitable[Results]]:
        """The results for consecutive parts of `items`, in order; every part is under way on return."""
        now = datetime.now(UTC)
        if len(items) < PARALLEL_FROM:
            return [_done(verify_all(items, keys, limits, now))]
        if self.processes < 2:
            return [asyncio.ensure_future(asyncio.to_thread(verify_all, items, keys, limits, now))]
        size = min(-(-len(items) // self.processes), PART_ITEMS)
        loop = asyncio.get_running_loop()
        pool = self._started()
        parts = [items[start : start + size] for start in range(0, len(items), size)]
        return [loop.run_in_executor(pool, verify_all, part, _ring_for(part, keys), limits, now) for part in parts]

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("forkserver"))
        return self._pool

    async def start(self) -> None:
        """Start the worker processes now rather than at the first batch (each imports the reporter)."""
        if self.processes < 2:
            return
        loop = asyncio.get_running_loop()
        pool = self._started()
        await asyncio.gather(*(loop.run_in_executor(pool, _started_worker) for _worker in range(self.processes)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
