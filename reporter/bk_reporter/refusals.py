"""Recording refused manifests that are security events (issue 16), in groups, bounded per client.

A manifest refused for its signature or its key (outcome.SECURITY_REFUSALS) is a row in
`refusals` (migrations/0013): when, from which client address, the code, the host the manifest
claimed and the key the signature names, and the reporter's own message; never the body. The
notification evaluator tells them (condition `refused`, notify/alerts.py).

As in group_commit.py, the refusals of concurrent requests wait together for one INSERT, and a
refused request is answered after the commit that recorded its refusal; one writer at a time,
so a flood of garbage holds at most one database connection and good ingest keeps the rest.
Each client gets RECORDED_PER_MINUTE rows a minute; beyond that its refusals are counted, not
recorded or waited for, and a `refusals_dropped` row says how many, once that minute is over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg

from bk_evidence import manifest as bk_manifest

from .ingest import storable

log = logging.getLogger("bk_reporter.refusals")

RECORDED_PER_MINUTE = 60
MAX_CLIENTS_PER_MINUTE = 10_000  # beyond: counted under MANY_CLIENTS
MAX_WAITING = 10_000
MANY_CLIENTS = "(more clients)"
MESSAGE_LIMIT = 500
HOST_LIMIT = 255
DROPPED = "refusals_dropped"

INSERT_REFUSALS = """
INSERT INTO refusals (received_at, client, code, claimed_host, key_fingerprint, message)
SELECT received_at, client, code, claimed_host, key_fingerprint, message
  FROM json_to_recordset(%(rows)s::json) AS r(received_at timestamptz, client text, code text,
                                              claimed_host text, key_fingerprint text, message text)
"""

ConnectionSource = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]]


@dataclass(frozen=True)
class Refusal:
    received_at: str  # ISO 8601, as the row's JSON carries it
    client: str | None
    code: str
    claimed_host: str | None
    key_fingerprint: str | None
    message: str


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def claimed_host(manifest_text: str) -> str | None:
    """The `host` a manifest names, read only to say whom a refused one claimed to be."""
    try:
        doc = bk_manifest.loads_strict(manifest_text)
    except bk_manifest.ManifestError:
        return None
    host = doc.get("host")
    return _bounded(host, HOST_LIMIT) if isinstance(host, str) and host and storable(host) else None


def refusal(
    client: str, code: str, message: str, *, host: str | None, fingerprint: str | None, now: datetime | None = None
) -> Refusal:
    return Refusal(
        received_at=(now or datetime.now(UTC)).isoformat(),
        client=client or None,
        code=code,
        claimed_host=host,
        key_fingerprint=fingerprint,
        message=_bounded(message, MESSAGE_LIMIT),
    )


class RefusalLog:
    """Records refusals for concurrent requests, one INSERT at a time, at most so many a client a minute."""

    def __init__(
        self,
        connection: ConnectionSource,
        *,
        per_minute: int = RECORDED_PER_MINUTE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connection = connection
        self._per_minute = per_minute
        self._clock = clock
        self._minute = -1
        self._recorded: dict[str, int] = {}  # this minute's rows per client
        self._dropped: dict[str, int] = {}  # this minute's refusals not recorded, per client
        self._summaries: list[Refusal] = []  # the previous minutes' drops, still to write
        self._waiting: list[tuple[Refusal, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._flush_timer: asyncio.TimerHandle | None = None

    def admits(self, client: str) -> bool:
        """Whether a refusal from `client` is recorded now (else it is counted as dropped)."""
        self._roll_minute()
        key = client if client in self._recorded or len(self._recorded) < MAX_CLIENTS_PER_MINUTE else MANY_CLIENTS
        if self._recorded.get(key, 0) < self._per_minute and len(self._waiting) < MAX_WAITING:
            self._recorded[key] = self._recorded.get(key, 0) + 1
            return True
        self._dropped[key] = self._dropped.get(key, 0) + 1
        self._flush_when_the_minute_ends()
        return False

    async def record(self, refusals: Sequence[Refusal]) -> None:
        """Returns once these are committed; a failure is logged, never raised (the answer stands)."""
        if not refusals:
            return
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _refusal in refusals]
        self._waiting.extend(zip(refusals, futures, strict=True))
        self._start_writer()
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error("refusals not recorded", extra={"error": str(outcome), "refusals": len(refusals)})
                return

    async def drain(self) -> None:
        """Write what is waiting and the drops counted so far (at shutdown, and in tests)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._roll_minute(force=True)
        self._start_writer()
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def _roll_minute(self, *, force: bool = False) -> None:
        minute = int(self._clock() // 60)
        if minute == self._minute and not force:
            return
        ended = datetime.fromtimestamp(self._clock(), UTC)
        for client, count in sorted(self._dropped.items()):
            message = f"{count} further refusal(s) from this client not recorded (over {self._per_minute} a minute)"
            self._summaries.append(refusal(client, DROPPED, message, host=None, fingerprint=None, now=ended))
        self._dropped.clear()
        if minute != self._minute:
            self._minute, self._recorded = minute, {}

    def _flush_when_the_minute_ends(self) -> None:
        if self._flush_timer is None:
            delay = 60 - self._clock() % 60 + 0.01
            self._flush_timer = asyncio.get_running_loop().call_later(delay, self._flush_drops)

    def _flush_drops(self) -> None:
        self._flush_timer = None
        self._roll_minute()
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None and (self._waiting or self._summaries):
            self._writer = asyncio.create_task(self._write_while_waiting())

    async def _write_while_waiting(self) -> None:
        try:
            while self._waiting or self._summaries:
                group, self._waiting = self._waiting, []
                summaries, self._summaries = self._summaries, []
                rows = json.dumps([asdict(r) for r, _future in group] + [asdict(s) for s in summaries])
                try:
                    async with self._connection() as conn:
                        await conn.execute(INSERT_REFUSALS, {"rows": rows})
                except Exception as exc:  # handed to every request of the group
                    if not group:
                        log.error("refusals not recorded", extra={"error": str(exc), "refusals": len(summaries)})
                    for _refusal, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _refusal, future in group:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._writer = None
