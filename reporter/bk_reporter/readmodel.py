"""The read model: one data function per thing the reporter shows, returning plain rows.

The JSON API (fleet.py renders it), the pages (web/pages.py), /metrics (metrics.py) and
`bk-reporter status` (cli.py) all read through these functions; none holds a query of its own.
The statements read the views of migrations 0003 and 0010 and the derived tables. None scans
events: events are read by primary key, by (host, seq), or newest first through an index with a
LIMIT (events_by_time, events_by_host_time, events_by_host_job_kind_time), so a page costs the
same with a hundred thousand events as with ten million.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

# The states of a (host, job, kind), worst first. The rules that decide them live in the
# fleet_status view (migrations/0003_views.sql), their order in bk_state_rank;
# tests/integration/test_readmodel.py holds this tuple to both.
STATES = ("stale", "missing", "failing", "gap", "unconfirmed", "late", "ok")
STATE_MEANINGS = {
    "stale": "no success for twice the job's cadence (48 h for a backup that declares none)",
    "missing": "enrolled, but has never reported",
    "failing": "the latest run failed",
    "gap": "the host's chain misses manifests or has a link that does not hold",
    "unconfirmed": "the host claims a snapshot that no hub receipt has confirmed",
    "late": "the next run is overdue (past its cadence and a grace period)",
    "ok": "on time, confirmed by the hub, chain intact",
}

Row = dict[str, Any]

# -- the fleet ------------------------------------------------------------------------------

# Every (host, job, kind), one "missing" row (job and kind NULL) per host that never reported.
FLEET_JOBS = """
SELECT host, job, kind, state, last_status, last_event_id, last_started_at, last_finished_at,
       last_duration_seconds, last_data_added, last_snapshot_id, cadence_seconds, last_success_at,
       late_at, stale_at, runs, failures, unconfirmed_snapshots
  FROM fleet_status
 ORDER BY host, bk_state_rank(state), job, kind
"""

FLEET_HOSTS = """
SELECT host, state, active_keys, events, last_seq, chain_missing, chain_breaks, last_received_at
  FROM host_status
 ORDER BY bk_state_rank(state), host
"""

# The recent runs of one (host, job, kind) of job_status `js`, newest first (index
# events_by_host_job_kind_time; the expression coalesce(e.job, '') must match it).
_RECENT_RUNS = """
SELECT e.id, e.status, e.started_at, e.finished_at,
       extract(epoch FROM e.finished_at - e.started_at)::double precision AS duration_seconds,
       e.data_added, e.files_new, e.files_changed
  FROM events e
 WHERE e.host = {alias}.host AND coalesce(e.job, '') = {alias}.job AND e.kind = {alias}.kind
 ORDER BY e.finished_at DESC
 LIMIT %(runs)s
"""

# -- fleet overview -------------------------------------------------------------------------

# One statement, so that fleet_overview (the state of every job) is computed once per page:
# the counts for the filter chips (states under the group and job filters; groups and jobs
# overall) as one JSON value on every row, then the page's rows with their details. A page
# past the end still returns one row, with the counts and NULL details.
OVERVIEW = (
    """
WITH everything AS MATERIALIZED (
    SELECT * FROM fleet_overview
),
filtered AS (
    SELECT *
      FROM everything
     WHERE (%(group)s::text IS NULL OR host_group = %(group)s) AND (%(job)s::text IS NULL OR job = %(job)s)
),
facets AS (
    SELECT jsonb_build_object(
               'state', (SELECT coalesce(jsonb_object_agg(state, rows), '{}')
                           FROM (SELECT state, count(*) AS rows FROM filtered GROUP BY state) counted),
               'group', (SELECT coalesce(jsonb_object_agg(host_group, rows), '{}')
                           FROM (SELECT host_group, count(*) AS rows FROM everything GROUP BY host_group) counted),
               'job', (SELECT coalesce(jsonb_object_agg(job, rows), '{}')
                         FROM (SELECT job, count(*) AS rows FROM everything WHERE job <> '' GROUP BY job) counted)
           ) AS facets
),
page AS (
    SELECT *
      FROM filtered
     WHERE %(state)s::text IS NULL OR state = %(state)s
     ORDER BY state_rank, host, job NULLS FIRST, kind NULLS FIRST
     LIMIT %(limit)s OFFSET %(offset)s
),
detailed AS (
    SELECT page.host, page.host_group, page.job, page.kind, page.state, page.state_rank, page.last_status,
           page.last_finished_at, page.last_duration_seconds, page.last_success_at, page.cadence_seconds,
           page.late_at, page.stale_at, page.next_due_at, page.chain_missing, page.chain_breaks,
           page.unconfirmed_snapshots,
           success.snapshot_id AS last_snapshot_id, success.data_added AS last_data_added,
           sizes.size_bytes AS repository_size_bytes, sizes.size_text AS repository_size_text,
           recent.durations
      FROM page
      LEFT JOIN events success ON success.id = page.last_success_event_id
      LEFT JOIN snapshots snapshot ON snapshot.snapshot_id = success.snapshot_id
      LEFT JOIN repository_sizes sizes
             ON sizes.hub_host = snapshot.hub_host AND sizes.repository_name = snapshot.hub_repository
      LEFT JOIN LATERAL (
           SELECT array_agg(runs.duration_seconds ORDER BY runs.finished_at) AS durations
             FROM ("""
    + _RECENT_RUNS.format(alias="page")
    + """) runs
           ) recent ON page.kind IS NOT NULL
)
SELECT facets.facets, detailed.*
  FROM facets
  LEFT JOIN detailed ON true
 ORDER BY detailed.state_rank, detailed.host, detailed.job NULLS FIRST, detailed.kind NULLS FIRST
"""
)

FLEET_TOTALS = """
SELECT (SELECT count(*) FROM enrolled_hosts WHERE active_keys > 0) AS enrolled_hosts,
       (SELECT count(*) FROM host_chain) AS reporting_hosts,
       (SELECT coalesce(sum(events), 0) FROM host_chain) AS events
"""

# -- host page ------------------------------------------------------------------------------

HOST_SUMMARY = """
SELECT h.host, bk_host_group(h.host) AS host_group, h.state, h.jobs, h.jobs_not_ok, h.last_run_at,
       h.last_success_at, h.active_keys, h.events, h.last_seq, h.chain_missing, h.chain_breaks,
       h.last_received_at, c.first_received_at
  FROM host_status h
  LEFT JOIN chain_status c ON c.host = h.host
 WHERE h.host = %(host)s
"""

HOST_KEYS = """
SELECT fingerprint, key_type, comment, enrolled_at, retired_at
  FROM host_keys
 WHERE host = %(host)s
 ORDER BY enrolled_at, fingerprint
"""

HOST_JOBS = """
SELECT host, job, kind, state, last_status, last_event_id, last_started_at, last_finished_at, last_duration_seconds,
       last_data_added, last_snapshot_id, last_success_at, cadence_seconds, next_due_at, late_at, stale_at, runs,
       failures, unconfirmed_snapshots, chain_missing, chain_breaks
  FROM fleet_overview
 WHERE host = %(host)s AND kind IS NOT NULL
 ORDER BY state_rank, job, kind
"""

CHAIN_GAPS = "SELECT first_missing, last_missing FROM chain_gaps(%(host)s) LIMIT %(limit)s"

CHAIN_BREAKS = """
SELECT b.seq, b.expected_prev, b.found_prev, b.detected_at, e.id AS event_id
  FROM chain_breaks b
  LEFT JOIN events e ON e.host = b.host AND e.seq = b.seq
 WHERE b.host = %(host)s
 ORDER BY b.seq
 LIMIT %(limit)s
"""

HOST_TRENDS = (
    """
SELECT js.job, runs.*
  FROM job_status js
 CROSS JOIN LATERAL ("""
    + _RECENT_RUNS.format(alias="js")
    + """) runs
 WHERE js.host = %(host)s AND js.kind = 'backup'
 ORDER BY js.job, runs.finished_at
"""
)

HOST_SNAPSHOTS = """
SELECT snapshot_id, job, repository_name, repository_url, claimed_at, claim_event_id, received, hub_host, arrived_at,
       size_bytes, receipt_event_id, hub_lag_seconds, offsite, offsite_destination_names, first_offsite_at,
       offsite_lag_seconds
  FROM snapshot_lineage
 WHERE host = %(host)s AND claimed
 ORDER BY claimed_at DESC
 LIMIT %(limit)s
"""

UNCLAIMED_SNAPSHOTS = """
SELECT snapshot_id, hub_host, arrived_at, receipt_event_id
  FROM snapshots
 WHERE hub_repository = %(host)s AND claim_event_id IS NULL
 ORDER BY arrived_at DESC
 LIMIT %(limit)s
"""

HOST_DRILLS = """
SELECT runs.id, runs.kind, runs.job, runs.status, runs.started_at, runs.finished_at,
       runs.doc -> 'restore' AS restore, runs.doc #>> '{error,message}' AS error
  FROM job_status js
 CROSS JOIN LATERAL (
       SELECT e.id, e.kind, coalesce(e.job, '') AS job, e.status, e.started_at, e.finished_at,
              bk_manifest_doc(e.manifest) AS doc
         FROM events e
        WHERE e.host = js.host AND coalesce(e.job, '') = js.job AND e.kind = js.kind
        ORDER BY e.finished_at DESC
        LIMIT %(limit)s
       ) runs
 WHERE js.host = %(host)s AND js.kind IN ('drill', 'restore')
 ORDER BY runs.finished_at DESC
 LIMIT %(limit)s
"""

_TIMELINE = """
SELECT id, seq, kind, coalesce(job, '') AS job, status, started_at, finished_at,
       extract(epoch FROM finished_at - started_at)::double precision AS duration_seconds,
       snapshot_id, data_added, repository_name, jsonb_array_length(lineage) AS lineage_items,
       CASE WHEN status <> 'success' THEN bk_manifest_doc(manifest) #>> '{{error,message}}' END AS error
  FROM events
 WHERE host = %(host)s {after}
 ORDER BY finished_at DESC, id DESC
 LIMIT %(limit)s
"""

# Newest first from the top, or from just before a (finished_at, id) cursor (index events_by_host_time).
TIMELINE_FIRST = _TIMELINE.format(after="")
TIMELINE_AFTER = _TIMELINE.format(after="AND (finished_at, id) < (%(before_time)s, %(before_id)s)")

# -- stale and missing ----------------------------------------------------------------------

# Most overdue first, a page at a time; `total` counts every overdue row.
OVERDUE = """
SELECT host, host_group, job, kind, state, last_status, last_finished_at, last_success_at, cadence_seconds,
       next_due_at, late_at, stale_at, coalesce(next_due_at, stale_at) AS due_at, count(*) OVER () AS total
  FROM fleet_overview
 WHERE kind IS NOT NULL AND (late_at < now() OR stale_at < now())
 ORDER BY coalesce(next_due_at, stale_at), host, job, kind
 LIMIT %(limit)s OFFSET %(offset)s
"""

NEVER_REPORTED = """
SELECT eh.host, bk_host_group(eh.host) AS host_group, eh.enrolled_at, eh.active_keys, count(*) OVER () AS total
  FROM enrolled_hosts eh
 WHERE eh.active_keys > 0 AND NOT EXISTS (SELECT 1 FROM host_chain hc WHERE hc.host = eh.host)
 ORDER BY eh.enrolled_at, eh.host
 LIMIT %(limit)s
"""

# -- one event ------------------------------------------------------------------------------

# Refused signatures and keys (migrations/0013) within a window, per claimed host, code and
# client, for the notification evaluator's `refused` condition (notify/alerts.refused_alerts).
# The counts of refusals not recorded (refusals_dropped) name no host and are left out.
RECENT_REFUSALS = """
SELECT coalesce(claimed_host, '') AS host, code, coalesce(client, '') AS client, count(*) AS refusals,
       min(received_at) AS first_at, max(received_at) AS last_at
  FROM refusals
 WHERE received_at > %(since)s AND received_at <= %(now)s AND code <> 'refusals_dropped'
 GROUP BY 1, 2, 3
"""

EVENT = """
SELECT e.id, e.host, e.seq, e.prev, e.sha256, e.kind, e.status, e.job, e.started_at, e.finished_at, e.received_at,
       extract(epoch FROM e.finished_at - e.started_at)::double precision AS duration_seconds,
       e.key_fingerprint, e.repository_name, e.repository_url, e.snapshot_id, e.data_added, e.manifest, e.signature,
       k.public_key, k.key_type, k.comment AS key_comment, k.enrolled_at AS key_enrolled_at,
       k.retired_at AS key_retired_at,
       earlier.id AS previous_id, earlier.sha256 AS previous_sha256, later.id AS next_id,
       later.prev AS next_prev, chain.last_seq AS chain_last_seq
  FROM events e
  JOIN host_chain chain ON chain.host = e.host
  LEFT JOIN host_keys k ON k.host = e.host AND k.fingerprint = e.key_fingerprint
  LEFT JOIN events earlier ON earlier.host = e.host AND earlier.seq = e.seq - 1
  LEFT JOIN events later ON later.host = e.host AND later.seq = e.seq + 1
 WHERE e.id = %(id)s
"""


# -- events ---------------------------------------------------------------------------------

EVENT_COLUMNS = """
id, host, seq, prev, sha256, kind, status, job, started_at, finished_at, received_at, duration_seconds,
key_fingerprint, repository_name, snapshot_id, data_added
"""

EVENTS_PAGE = "SELECT {columns} FROM event_facts WHERE {where} ORDER BY finished_at, id LIMIT %(limit)s"


@dataclass(frozen=True)
class EventQuery:
    host: str | None
    kind: str | None
    since: datetime | None
    after: tuple[datetime, uuid.UUID] | None
    limit: int


def events_sql(query: EventQuery) -> tuple[sql.Composed, dict[str, Any]]:
    """Keyset pagination in (finished_at, id) order, through events_by_time / events_by_host_time."""
    conditions = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": query.limit + 1}
    if query.host is not None:
        conditions.append(sql.SQL("host = %(host)s"))
        params["host"] = query.host
    if query.kind is not None:
        conditions.append(sql.SQL("kind = %(kind)s"))
        params["kind"] = query.kind
    if query.since is not None:
        conditions.append(sql.SQL("finished_at >= %(since)s"))
        params["since"] = query.since
    if query.after is not None:
        conditions.append(sql.SQL("(finished_at, id) > (%(after_time)s, %(after_id)s)"))
        params["after_time"], params["after_id"] = query.after
    statement = sql.SQL(EVENTS_PAGE).format(columns=sql.SQL(EVENT_COLUMNS), where=sql.SQL(" AND ").join(conditions))
    return statement, params


# -- the data functions ---------------------------------------------------------------------

Connection = psycopg.AsyncConnection[Any]


async def _rows(conn: Connection, statement: Any, params: Mapping[str, Any] | None = None) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(statement, params)
        return await cursor.fetchall()


async def _first(conn: Connection, statement: str, params: Mapping[str, Any]) -> Row | None:
    found = await _rows(conn, statement, params)
    return found[0] if found else None


@dataclass(frozen=True)
class Fleet:
    hosts: list[Row]  # worst first
    jobs: list[Row]  # by host, worst first, including one "missing" row per silent host


async def fleet(conn: Connection) -> Fleet:
    """Every host and every job with its state."""
    return Fleet(hosts=await _rows(conn, FLEET_HOSTS), jobs=await _rows(conn, FLEET_JOBS))


async def fleet_totals(conn: Connection) -> Row:
    found = await _first(conn, FLEET_TOTALS, {})
    assert found is not None  # an aggregate returns one row
    return found


async def overview(
    conn: Connection, filters: Mapping[str, str | None], limit: int, offset: int, runs: int
) -> list[Row]:
    """One page of the fleet under state/group/job filters; every row carries the filter counts."""
    return await _rows(conn, OVERVIEW, {**filters, "limit": limit, "offset": offset, "runs": runs})


async def host(conn: Connection, name: str) -> Row | None:
    """A host's state and chain summary, or None if it is neither enrolled nor reporting."""
    return await _first(conn, HOST_SUMMARY, {"host": name})


async def host_jobs(conn: Connection, name: str) -> list[Row]:
    return await _rows(conn, HOST_JOBS, {"host": name})


async def host_keys(conn: Connection, name: str) -> list[Row]:
    return await _rows(conn, HOST_KEYS, {"host": name})


@dataclass(frozen=True)
class Chain:
    gaps: list[Row]
    breaks: list[Row]


async def chain(conn: Connection, summary: Mapping[str, Any], limit: int) -> Chain:
    """The gaps and broken links of a host's chain, read only when its summary counts some."""
    params = {"host": summary["host"], "limit": limit}
    gaps = await _rows(conn, CHAIN_GAPS, params) if summary["chain_missing"] else []
    breaks = await _rows(conn, CHAIN_BREAKS, params) if summary["chain_breaks"] else []
    return Chain(gaps, breaks)


async def snapshots(conn: Connection, name: str, limit: int) -> list[Row]:
    """The snapshots a host claimed, newest first, with their hub receipt and offsite copies."""
    return await _rows(conn, HOST_SNAPSHOTS, {"host": name, "limit": limit})


async def unclaimed_snapshots(conn: Connection, name: str, limit: int) -> list[Row]:
    return await _rows(conn, UNCLAIMED_SNAPSHOTS, {"host": name, "limit": limit})


async def trends(conn: Connection, name: str, runs: int) -> list[Row]:
    """The recent backup runs of each of a host's jobs, oldest first within a job."""
    return await _rows(conn, HOST_TRENDS, {"host": name, "runs": runs})


async def drills(conn: Connection, name: str, limit: int) -> list[Row]:
    return await _rows(conn, HOST_DRILLS, {"host": name, "limit": limit})


async def timeline(conn: Connection, name: str, before: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Row]:
    """A host's events newest first, from the top or from just before a (finished_at, id)."""
    params: dict[str, Any] = {"host": name, "limit": limit}
    if before is None:
        return await _rows(conn, TIMELINE_FIRST, params)
    params |= {"before_time": before[0], "before_id": before[1]}
    return await _rows(conn, TIMELINE_AFTER, params)


@dataclass(frozen=True)
class Overdue:
    jobs: list[Row]  # most overdue first; each row's `total` counts them all
    never_reported: list[Row]  # each row's `total` counts them all


async def overdue(conn: Connection, limit: int, offset: int, never_limit: int) -> Overdue:
    jobs = await _rows(conn, OVERDUE, {"limit": limit, "offset": offset})
    return Overdue(jobs, await _rows(conn, NEVER_REPORTED, {"limit": never_limit}))


async def events(conn: Connection, query: EventQuery) -> list[Row]:
    """One page of events in (finished_at, id) order, plus one row more if another page follows."""
    statement, params = events_sql(query)
    return await _rows(conn, statement, params)


async def event(conn: Connection, event_id: uuid.UUID) -> Row | None:
    """One event with its signed text, its key and its neighbours in the host's chain."""
    return await _first(conn, EVENT, {"id": event_id})
