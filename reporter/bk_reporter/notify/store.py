"""Alert state and delivery attempts in PostgreSQL (migration 0030), appended, never changed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from bk_reporter.notify.lifecycle import Current, Silence, Transition

# pg_advisory_lock key of the evaluator: one evaluation at a time across processes and replicas.
EVALUATOR_LOCK = 0x626B_6E6F_7469_6679  # "bknotify"


@contextmanager
def evaluator_lock(conn: psycopg.Connection) -> Iterator[bool]:
    """True when this session holds the evaluator's lock (for the with block), False if another does."""
    (held,) = conn.execute("SELECT pg_try_advisory_lock(%s)", (EVALUATOR_LOCK,)).fetchone()
    try:
        yield bool(held)
    finally:
        if held:
            conn.execute("SELECT pg_advisory_unlock(%s)", (EVALUATOR_LOCK,))


def current_states(conn: psycopg.Connection) -> dict[tuple[str, str, str], Current]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT * FROM alert_current_state").fetchall()
    return {
        (r["host"], r["job"], r["condition"]): Current(
            r["kind"], r["severity"], r["summary"], r["since"], r["decided_at"]
        )
        for r in rows
    }


def active_silences(conn: psycopg.Connection, now: datetime) -> list[Silence]:
    rows = conn.execute("SELECT host, job, until FROM alert_active_silences WHERE until > %s", (now,)).fetchall()
    return [Silence(host, job, until) for host, job, until in rows]


def add_silence(conn: psycopg.Connection, host: str, job: str, until: datetime, reason: str | None) -> None:
    conn.execute(
        "INSERT INTO alert_silences (host, job, until, reason) VALUES (%s, %s, %s, %s)", (host, job, until, reason)
    )


def record(conn: psycopg.Connection, transition: Transition, now: datetime, routes: Iterable[str]) -> int:
    """Append the transition and a pending attempt per route that must hear of it (one transaction)."""
    (transition_id,) = conn.execute(
        "INSERT INTO alert_transitions (host, job, condition, kind, severity, summary, since, decided_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            transition.host,
            transition.job,
            transition.condition,
            transition.kind,
            transition.severity,
            transition.summary,
            transition.since,
            now,
        ),
    ).fetchone()
    for route in routes:
        conn.execute(
            "INSERT INTO notification_attempts (transition_id, route, attempt, outcome, recorded_at)"
            " VALUES (%s, %s, 1, 'pending', %s)",
            (transition_id, route, now),
        )
    return int(transition_id)


def outcome(
    conn: psycopg.Connection, transition_id: int, route: str, *, attempt: int, error: str | None, now: datetime
) -> None:
    conn.execute(
        "INSERT INTO notification_attempts (transition_id, route, attempt, outcome, error, recorded_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (transition_id, route, attempt, "failed" if error else "sent", error, now),
    )


def undelivered(conn: psycopg.Connection) -> list[dict]:
    """Attempts whose latest word is pending (a crash before the outcome) or failed (to retry)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM notification_delivery_state WHERE outcome IN ('pending', 'failed')"
            " ORDER BY transition_id, route"
        ).fetchall()
