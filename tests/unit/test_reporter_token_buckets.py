"""The token buckets of ingest's per-client limits (the attack over HTTP: tests/integration)."""

from __future__ import annotations

from bk_evidence.delivery import BATCH_MAX_ITEMS
from bk_reporter.ratelimit import ClientLimiter
from bk_reporter.settings import Settings


def test_buckets_refill_and_idle_ones_are_forgotten() -> None:
    now = [0.0]
    limiter = ClientLimiter(per_minute=60, burst=2, max_clients=3, clock=lambda: now[0])
    assert [limiter.take("a"), limiter.take("a"), limiter.take("a")] == [None, None, 1]
    now[0] += 1.0
    assert limiter.take("a") is None  # one token a second
    for name in "bcde":
        limiter.take(name)
    assert len(limiter) == 3  # bounded: the longest idle went first
    now[0] += 3.0  # long enough for every bucket to refill: they are all forgotten
    limiter.take("f")
    assert len(limiter) == 1


def test_the_defaults_let_a_host_flush_a_week_offline_at_once() -> None:
    """A manifest every five minutes for a week, in the sender's batches, posted in the same instant."""
    defaults = Settings()
    limiter = ClientLimiter(defaults.ingest_requests_per_minute, defaults.ingest_burst, clock=lambda: 0.0)
    batches = -(-7 * 24 * 12 // BATCH_MAX_ITEMS)
    assert [limiter.take("host") for _batch in range(batches)] == [None] * batches
