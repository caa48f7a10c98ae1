"""One evaluation: read the fleet, decide transitions, record them with their pending deliveries,
then deliver what is undelivered (oldest first) and ping the dead-man's switch.

Recording comes before sending, in its own transaction: a crash after the send and before the
outcome leaves the attempt pending, and the next evaluation sends it again. One message may be
repeated, none is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
import requests
from psycopg.rows import dict_row

from bk_reporter.notify import store
from bk_reporter.notify.alerts import (
    FLEET_ROWS_SQL,
    HUB_SPACE_SQL,
    OFFSITE_SQL,
    SILENT_KEYS_SQL,
    Alert,
    Thresholds,
    alerts_from_rows,
    group_by_hub,
    hub_space_alert,
    offsite_late_alert,
    refused_alerts,
    silent_key_alert,
)
from bk_reporter.notify.channels import Route, mask_url, send
from bk_reporter.notify.lifecycle import Policy, decide, should_tell
from bk_reporter.readmodel import RECENT_REFUSALS
from bk_reporter.web.routes import NO_JIT

log = logging.getLogger("bk_reporter.notify")

Sender = Callable[[Route, str, str, str], "str | None"]
HEADINGS = {"fire": "PROBLEM", "repeat": "STILL A PROBLEM", "recover": "RESOLVED"}


@dataclass
class Outcome:
    evaluated: bool
    transitions: int = 0
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(attempt: int, base: timedelta = timedelta(minutes=1), ceiling: timedelta = timedelta(hours=1)) -> timedelta:
    return min(base * (2 ** max(attempt - 1, 0)), ceiling)


def _title(row: dict) -> str:
    where = row["host"] + (f"/{row['job']}" if row["job"] else "")
    return f"[bk] {HEADINGS.get(row['kind'], row['kind'])}: {where} {row['condition']}"


def _bad(conn: psycopg.Connection, now: datetime, thresholds: Thresholds) -> list[Alert]:
    with conn.cursor(row_factory=dict_row) as cur:
        bad = group_by_hub(alerts_from_rows(cur.execute(FLEET_ROWS_SQL).fetchall()))
        more = [hub_space_alert(row, thresholds.hub_min_free_fraction) for row in cur.execute(HUB_SPACE_SQL)]
        more += [silent_key_alert(row, now, thresholds) for row in cur.execute(SILENT_KEYS_SQL)]
        more += [offsite_late_alert(row, now, thresholds) for row in cur.execute(OFFSITE_SQL)]
        more += refused_alerts(cur.execute(RECENT_REFUSALS, {"since": now - thresholds.refused_window, "now": now}))
    bad.extend(alert for alert in more if alert is not None)
    return bad


def _decide_and_record(
    conn: psycopg.Connection, routes: Sequence[Route], now: datetime, policy: Policy, thresholds: Thresholds
) -> int:
    with conn.transaction():
        conn.execute(NO_JIT)
        bad = _bad(conn, now, thresholds)
        current = store.current_states(conn)
        transitions = decide(current, bad, store.active_silences(conn, now), now, policy)
        for transition in transitions:
            previous = current.get((transition.host, transition.job, transition.condition))
            told = should_tell(transition, previous)
            names = [r.name for r in routes if told and r.takes(transition.condition, transition.severity)]
            store.record(conn, transition, now, names)
    return len(transitions)


def _deliver(conn: psycopg.Connection, routes: Sequence[Route], now: datetime, sender: Sender, result: Outcome) -> None:
    by_name = {r.name: r for r in routes}
    for row in store.undelivered(conn):
        route = by_name.get(row["route"])
        if route is None:
            continue  # a route taken out of the file: its history stays, nothing more is sent to it
        attempt = row["attempt"] if row["outcome"] == "pending" else row["attempt"] + 1
        if row["outcome"] == "failed" and now - row["recorded_at"] < backoff(row["attempt"]):
            continue
        error = sender(route, _title(row), row["summary"], row["severity"])
        with conn.transaction():
            store.outcome(conn, row["transition_id"], route.name, attempt=attempt, error=error, now=now)
        if error:
            result.failed += 1
            result.errors.append(f"{route.name}: {error}")
            log.warning("notification to route %s failed (attempt %d): %s", route.name, attempt, error)
        else:
            result.sent += 1


def ping(healthcheck_url: str | None, failed: bool) -> None:
    """Healthchecks-compatible: GET the URL, or URL/fail when delivery failed."""
    if not healthcheck_url:
        return
    url = healthcheck_url.rstrip("/") + ("/fail" if failed else "")
    try:
        requests.get(url, timeout=10)
    except requests.RequestException as exc:
        log.warning("dead-man's switch %s not reached: %s", mask_url(healthcheck_url), type(exc).__name__)


def evaluate_once(
    url: str,
    routes: Sequence[Route],
    now: datetime,
    *,
    policy: Policy | None = None,
    sender: Sender = send,
    healthcheck_url: str | None = None,
    thresholds: Thresholds | None = None,
) -> Outcome:
    """One evaluation, unless another process holds the evaluator's lock (then evaluated is False)."""
    with psycopg.connect(url, autocommit=True) as conn, store.evaluator_lock(conn) as held:
        if not held:
            return Outcome(evaluated=False)
        transitions = _decide_and_record(conn, routes, now, policy or Policy(), thresholds or Thresholds())
        result = Outcome(evaluated=True, transitions=transitions)
        _deliver(conn, routes, now, sender, result)
    ping(healthcheck_url, failed=result.failed > 0)
    return result
