"""What each page shows: the read model (readmodel.py) read on one connection, shaped for its template."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from bk_evidence import sshsig

from .. import readmodel
from ..readmodel import STATES
from .charts import Point, line_chart
from .timefmt import absolute_text, duration

PAGE_SIZE = 50
SPARK_RUNS = 20
TREND_RUNS = 60
LINEAGE_LIMIT = 20
DRILL_LIMIT = 10
TIMELINE_PAGE = 50
DETAIL_LIMIT = 100
MAX_TEXT = 200
MAX_PAGE = 100_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Row = dict[str, Any]


class BadRequest(ValueError):
    """A query parameter is unusable; the message says which and why."""


def _text_parameter(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name) or None
    if value is not None and ("\x00" in value or len(value) > MAX_TEXT):
        raise BadRequest(f"{name} is not a usable value")
    return value


def page_number(params: Mapping[str, str]) -> int:
    page = params.get("page", "1")
    if not page.isdigit() or not 1 <= int(page) <= MAX_PAGE:
        raise BadRequest("page must be a positive number")
    return int(page)


@dataclass(frozen=True)
class Filters:
    """The overview's filters and page, from and back to a query string."""

    state: str | None = None
    group: str | None = None
    job: str | None = None
    page: int = 1

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Filters:
        state = _text_parameter(params, "state")
        if state is not None and state not in STATES:
            raise BadRequest(f"state must be one of {', '.join(STATES)}")
        return cls(state, _text_parameter(params, "group"), _text_parameter(params, "job"), page_number(params))

    def url(self, **changes: Any) -> str:
        """The overview's URL with these filters, some changed (a changed filter restarts at page 1)."""
        changed = replace(self, **changes)
        if "page" not in changes:
            changed = replace(changed, page=1)
        values = {"state": changed.state, "group": changed.group, "job": changed.job}
        values["page"] = str(changed.page) if changed.page > 1 else None
        query = urlencode({key: value for key, value in values.items() if value is not None})
        return f"/?{query}" if query else "/"

    @property
    def params(self) -> dict[str, Any]:
        return {"state": self.state, "group": self.group, "job": self.job}


@dataclass(frozen=True)
class Cursor:
    """A position in a host's timeline: the (finished_at, id) of the last event shown."""

    finished_at: datetime
    event_id: uuid.UUID

    def token(self) -> str:
        micros = (self.finished_at - EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.event_id}"

    @classmethod
    def parse(cls, token: str | None) -> Cursor | None:
        if token is None:
            return None
        micros, event_id = token.partition(".")[::2]
        try:
            return cls(EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(event_id))
        except (ValueError, OverflowError) as exc:
            raise BadRequest("before is not a position this page handed out") from exc


Connection = readmodel.Connection


# -- fleet overview -------------------------------------------------------------------------


async def overview(conn: Connection, filters: Filters) -> dict[str, Any]:
    offset = (filters.page - 1) * PAGE_SIZE
    rows = await readmodel.overview(conn, filters.params, PAGE_SIZE, offset, SPARK_RUNS)
    facets = rows[0]["facets"]
    counts = {state: facets["state"].get(state, 0) for state in STATES}
    total = counts[filters.state] if filters.state else sum(counts.values())
    return {
        "filters": filters,
        "counts": counts,
        "groups": dict(sorted(facets["group"].items())),
        "jobs": dict(sorted(facets["job"].items())),
        "rows": [row for row in rows if row["host"] is not None],
        "total": total,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
        "totals": await readmodel.fleet_totals(conn),
    }


# -- host page ------------------------------------------------------------------------------


def _trend_charts(job: str, runs: Sequence[Row]) -> list[str]:
    def points(name: str, scale: float) -> list[Point]:
        return [
            Point(
                run["finished_at"].timestamp(),
                run[name] / scale,
                f"{absolute_text(run['finished_at'])} · {run['status']}",
                "fail" if run["status"] == "failure" else "",
            )
            for run in runs
            if run[name] is not None
        ]

    first, last = runs[0]["finished_at"], runs[-1]["finished_at"]
    axis = (absolute_text(first)[:10], absolute_text(last)[:10])
    return [
        line_chart(points("duration_seconds", 60), title=f"{job}: duration", unit=" min", x_labels=axis),
        line_chart(points("data_added", 2**20), title=f"{job}: data added", unit=" MiB", x_labels=axis),
        line_chart(points("files_changed", 1), title=f"{job}: files changed", x_labels=axis),
    ]


def _trends(rows: Sequence[Row]) -> dict[str, list[str]]:
    by_job: dict[str, list[Row]] = {}
    for row in rows:
        by_job.setdefault(row["job"], []).append(row)
    return {job: _trend_charts(job, runs) for job, runs in by_job.items()}


async def _timeline(conn: Connection, host: str, before: Cursor | None) -> dict[str, Any]:
    position = None if before is None else (before.finished_at, before.event_id)
    rows = await readmodel.timeline(conn, host, position, TIMELINE_PAGE + 1)
    shown = rows[:TIMELINE_PAGE]
    more = len(rows) > TIMELINE_PAGE
    older = Cursor(shown[-1]["finished_at"], shown[-1]["id"]).token() if more else None
    return {"events": shown, "older": older, "paged": before is not None}


async def host_page(conn: Connection, host: str, before: Cursor | None) -> dict[str, Any] | None:
    summary = await readmodel.host(conn, host)
    if summary is None:
        return None
    chain = await readmodel.chain(conn, summary, DETAIL_LIMIT)
    return {
        "host": summary,
        "keys": await readmodel.host_keys(conn, host),
        "jobs": await readmodel.host_jobs(conn, host),
        "chain": {"gaps": chain.gaps, "breaks": chain.breaks},
        "trends": _trends(await readmodel.trends(conn, host, TREND_RUNS)),
        "lineage": await readmodel.snapshots(conn, host, LINEAGE_LIMIT),
        "unclaimed": await readmodel.unclaimed_snapshots(conn, host, LINEAGE_LIMIT),
        "drills": await readmodel.drills(conn, host, DRILL_LIMIT),
        "timeline": await _timeline(conn, host, before),
        "trend_runs": TREND_RUNS,
    }


# -- stale and missing ----------------------------------------------------------------------


async def overdue_page(conn: Connection, page: int) -> dict[str, Any]:
    found = await readmodel.overdue(conn, PAGE_SIZE, (page - 1) * PAGE_SIZE, DETAIL_LIMIT)
    overdue, never = found.jobs, found.never_reported
    total = overdue[0]["total"] if overdue else 0
    return {
        "overdue": overdue,
        "overdue_total": total,
        "page": page,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
        "never": never,
        "never_total": never[0]["total"] if never else 0,
    }


# -- one event ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One verdict shown with a mark: ok (✓), warn (…) or bad (✗)."""

    mark: str
    text: str


def verify_now(row: Row) -> Check:
    """Verify the stored signature over the stored bytes again, with the enrolled key."""
    if row["public_key"] is None:
        return Check("bad", "the key that verified it on receipt is no longer enrolled for this host")
    try:
        sshsig.verify(row["manifest"].encode("utf-8"), row["signature"], [row["public_key"]])
    except sshsig.SignatureError as exc:
        return Check("bad", f"the stored signature does NOT verify over the stored manifest: {exc}")
    return Check("ok", "the stored signature verifies over the stored manifest bytes with this key (checked now)")


def link_checks(row: Row) -> list[Check]:
    """Does this manifest link to its predecessor, and its successor to it?"""
    seq = row["seq"]
    if seq == 1:
        backward = (
            Check("ok", "seq 1 starts the chain") if row["prev"] is None else Check("bad", "seq 1 names a predecessor")
        )
    else:
        backward = _neighbour_check("before", seq - 1, row["previous_id"], row["previous_sha256"] == row["prev"])
    if row["next_id"] is None and seq == row["chain_last_seq"]:
        forward = Check("ok", "the newest manifest of this host's chain so far")
    else:
        forward = _neighbour_check("after", seq + 1, row["next_id"], row["next_prev"] == row["sha256"])
    return [backward, forward]


_NEIGHBOUR_TEXTS = {
    ("before", "warn"): "seq {seq} has not arrived: a gap before this manifest",
    ("before", "ok"): "prev is the SHA-256 of seq {seq}",
    ("before", "bad"): "prev is not the SHA-256 of the stored seq {seq}: a fork or a rewritten history",
    ("after", "warn"): "seq {seq} has not arrived: a gap after this manifest",
    ("after", "ok"): "seq {seq} names this manifest as its prev",
    ("after", "bad"): "seq {seq} names another manifest as its prev: a fork",
}


def _neighbour_check(side: str, seq: int, neighbour_id: object, linked: bool) -> Check:
    mark = "warn" if neighbour_id is None else "ok" if linked else "bad"
    return Check(mark, _NEIGHBOUR_TEXTS[side, mark].format(seq=seq))


def pretty_manifest(text: str) -> str:
    """The manifest indented for reading; the signed bytes are shown separately, verbatim."""
    return json.dumps(json.loads(text), indent=2, ensure_ascii=False)


async def event_page(conn: Connection, event_id: uuid.UUID) -> dict[str, Any] | None:
    row = await readmodel.event(conn, event_id)
    if row is None:
        return None
    return {
        "event": row,
        "verification": verify_now(row),
        "links": link_checks(row),
        "pretty": pretty_manifest(row["manifest"]),
        "duration": duration(row["duration_seconds"]),
    }
