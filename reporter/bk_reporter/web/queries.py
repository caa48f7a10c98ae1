"""The SQL behind the pages, one named statement per thing a page shows.

They read the views of migrations 0003 and 0010 and the derived tables. None scans events:
events are read by primary key, by (host, seq), or newest first through an index with a
LIMIT (events_by_host_time, events_by_host_job_kind_time), so a page costs the same with a
hundred thousand events as with ten million.
"""

from __future__ import annotations

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
SELECT job, kind, state, last_status, last_event_id, last_finished_at, last_duration_seconds, last_success_at,
       cadence_seconds, next_due_at, late_at, stale_at, runs, failures, unconfirmed_snapshots, chain_missing,
       chain_breaks
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

HOST_LINEAGE = """
SELECT snapshot_id, job, repository_name, repository_url, claimed_at, claim_event_id, received, hub_host, arrived_at,
       receipt_event_id, hub_lag_seconds, offsite, offsite_destination_names, first_offsite_at, offsite_lag_seconds
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

EVENT = """
SELECT e.id, e.host, e.seq, e.prev, e.sha256, e.kind, e.status, coalesce(e.job, '') AS job,
       e.started_at, e.finished_at, e.received_at,
       extract(epoch FROM e.finished_at - e.started_at)::double precision AS duration_seconds,
       e.key_fingerprint, e.repository_name, e.repository_url, e.snapshot_id, e.manifest, e.signature,
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
