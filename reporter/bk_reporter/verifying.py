"""Verifying the signed items of a request: a few on the event loop, many in worker processes.

Checking a manifest (signature, strict parsing, schema) costs about half a millisecond of pure
Python. A batch of hundreds would hold the event loop, and one process, for that long; from
PARALLEL_FROM items on, the work is split between worker processes so that every core helps.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

from .ingest import KeyRing, Limits, SignedBy, VerifiedManifest, verify
from .outcome import Outcome

PARALLEL_FROM = 16


def verify_all(
    items: Sequence[SignedBy], keys: KeyRing, limits: Limits, now: datetime
) -> list[VerifiedManifest | Outcome]:
    return [verify(item, keys, limits, now) for item in items]


def _started_worker() -> None:
    """Run in a worker process: nothing to do once it has started and imported this module."""


class Verifier:
    """Runs `verify` for a request's items, in `processes` worker processes when there are many."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def verify(
        self, items: Sequence[SignedBy], keys: KeyRing, limits: Limits
    ) -> list[VerifiedManifest | Outcome]:
        now = datetime.now(UTC)
        if len(items) < PARALLEL_FROM:
            return verify_all(items, keys, limits, now)
        if self.processes < 2:
            return await asyncio.to_thread(verify_all, items, keys, limits, now)
        size = -(-len(items) // self.processes)
        loop = asyncio.get_running_loop()
        pool = self._started()
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(pool, verify_all, items[start : start + size], dict(keys), limits, now)
                for start in range(0, len(items), size)
            )
        )
        return [result for part in parts for result in part]

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
