"""What was sent, to which route, when, and the outcome: a read-only page, the same in the API
(/api/v1/notifications) and counters in /metrics. Nothing here changes anything: silences are
set from the CLI only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bk_reporter.fleet import json_row, timestamp
from bk_reporter.web.routes import _load, _render, _Timer

LIMIT = 200

DELIVERIES_SQL = """
SELECT d.transition_id, d.route, d.attempt, d.outcome, d.error, d.recorded_at,
       d.host, d.job, d.condition, d.kind, d.severity, d.summary
  FROM notification_delivery_state d
 ORDER BY d.recorded_at DESC, d.transition_id DESC, d.route
 LIMIT %(limit)s
"""

OPEN_ALERTS_SQL = """
SELECT host, job, condition, kind, severity, summary, since, decided_at
  FROM alert_current_state
 WHERE kind <> 'recover'
 ORDER BY since
"""

SILENCES_SQL = (
    "SELECT host, job, until, reason, created_at FROM alert_active_silences WHERE until > now() ORDER BY until"
)

COUNTS_SQL = """
SELECT (SELECT count(*) FROM notification_attempts WHERE outcome = 'sent') AS sent,
       (SELECT count(*) FROM notification_attempts WHERE outcome = 'failed') AS failed,
       (SELECT count(*) FROM notification_delivery_state WHERE outcome <> 'sent') AS undelivered,
       (SELECT count(*) FROM alert_current_state WHERE kind IN ('fire', 'repeat')) AS firing
"""


async def _read(conn: Any) -> dict[str, list[dict[str, Any]]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(DELIVERIES_SQL, {"limit": LIMIT})
        deliveries = await cur.fetchall()
        await cur.execute(OPEN_ALERTS_SQL)
        alerts = await cur.fetchall()
        await cur.execute(SILENCES_SQL)
        silences = await cur.fetchall()
    return {"deliveries": deliveries, "alerts": alerts, "silences": silences}


def notifications_document(state: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    return {
        "generated_at": timestamp(datetime.now(UTC)),
        **{name: [json_row(row, *row.keys()) for row in rows] for name, rows in state.items()},
    }


async def api_notifications(request: Request) -> Response:
    return JSONResponse(notifications_document(await _load(request, _read)))


async def notifications_page(request: Request) -> Response:
    timer = _Timer()
    context = await _load(request, _read)
    timer.database_done()
    return _render("notifications.html", context, timer)


def exposition(counts: Mapping[str, int]) -> str:
    """The notification counters, in the same text format as the rest of /metrics."""
    lines = [
        "# HELP bk_notifications_total Notification delivery outcomes recorded, by outcome.",
        "# TYPE bk_notifications_total counter",
        f'bk_notifications_total{{outcome="sent"}} {counts["sent"]}',
        f'bk_notifications_total{{outcome="failed"}} {counts["failed"]}',
        "# HELP bk_notifications_undelivered Notifications pending or failed, still to be sent.",
        "# TYPE bk_notifications_undelivered gauge",
        f"bk_notifications_undelivered {counts['undelivered']}",
        "# HELP bk_alerts_firing Alerts told and not yet recovered.",
        "# TYPE bk_alerts_firing gauge",
        f"bk_alerts_firing {counts['firing']}",
    ]
    return "\n".join(lines) + "\n"


async def metrics_text(pool: Any) -> str:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(COUNTS_SQL)
        return exposition(await cur.fetchone())


def install(app: Starlette) -> None:
    """Add the page and the API route (read-only GETs) to the reporter's app."""
    app.router.routes[:0] = [
        Route("/notifications", notifications_page, methods=["GET"]),
        Route("/api/v1/notifications", api_notifications, methods=["GET"]),
    ]
