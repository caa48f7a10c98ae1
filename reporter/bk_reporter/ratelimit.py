"""Per-client limits on ingest: a token bucket per client address, checked before a body is read.

A client is the request's peer address as uvicorn gives it (`scope["client"]`): behind a load
balancer that is the balancer, unless `forwarded_allow_ips` names it, in which case uvicorn
takes the address from X-Forwarded-For, and only then (docs/scaling.md). A request costs one
token whatever it holds (a batch of 100 manifests is one request), so a host flushing its
spool after a week offline, a few dozen batches one after the other, stays far inside the
default burst.

Memory is bounded: buckets are kept in order of last use; a bucket idle long enough to have
refilled is the same as no bucket and is dropped, and beyond `max_clients` the longest idle
goes first (that client starts again with a full bucket, which favours no attacker: a fresh
bucket is what every new address gets anyway).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 100_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class ClientLimiter:
    """`burst` requests at once per client, refilled at `per_minute` requests a minute."""

    def __init__(
        self,
        per_minute: int,
        burst: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._refill_seconds = self.burst / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> int | None:
        """None when `client` may send this request; else the whole seconds until it may."""
        now = self._clock()
        self._evict_idle(now)
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        self._buckets[client] = bucket  # the most recently used, last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def _evict_idle(self, now: float) -> None:
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.at < self._refill_seconds:
                return
            self._buckets.popitem(last=False)
