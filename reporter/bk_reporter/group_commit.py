"""Storing the manifests of concurrent requests together: one INSERT and one commit for a group.

While a writer's INSERT runs and waits for its commit, the verified manifests of other requests
gather; the next INSERT takes them all. PostgreSQL then commits once and runs its trigger once
for the group instead of once per request, which is what lets single-manifest POSTs keep up
with many hosts at once. Every request still gets its answers only after the commit that
stored (or refused) its manifests, and a failure reaches every request of the group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool

from . import store
from .ingest import VerifiedManifest
from .outcome import Outcome

WRITERS = 2


class GroupWriter:
    """Stores manifests for concurrent callers, at most WRITERS INSERT statements at a time."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._waiting: list[tuple[VerifiedManifest, asyncio.Future[Outcome]]] = []
        self._writers: set[asyncio.Task[None]] = set()  # references, so that running writers are kept
        # Writers still willing to take waiting manifests. A writer leaves this count in the same
        # step in which it finds nothing waiting: counting finished tasks instead (their clean-up
        # runs a step later) left a request that came in between with no writer at all.
        self._running = 0

    async def store(self, manifests: Sequence[VerifiedManifest]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outcome]] = [loop.create_future() for _manifest in manifests]
        self._waiting.extend(zip(manifests, futures, strict=True))
        if self._running < WRITERS:
            self._running += 1
            writer = asyncio.create_task(self._write())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return list(await asyncio.gather(*futures))

    async def _write(self) -> None:
        try:
            await self._write_while_waiting()
        except BaseException:  # cancelled: no longer a writer either
            self._running -= 1
            raise

    async def _write_while_waiting(self) -> None:
        while True:
            if not self._waiting:
                self._running -= 1
                return
            group, self._waiting = self._waiting, []
            try:
                async with self._pool.connection() as conn:
                    outcomes = await store.store(conn, [manifest for manifest, _future in group])
            except Exception as exc:  # handed to every request of the group
                for _manifest, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_manifest, future), outcome in zip(group, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
