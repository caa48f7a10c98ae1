-- Named views for the API, the web UI and Grafana. They read the derived state (and a few
-- primary-key or per-host lookups), never all events, so their cost does not grow with history.

-- Worst first: the order in which states are listed and the precedence when several apply.
CREATE FUNCTION bk_state_rank(state text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT array_position(ARRAY['stale', 'missing', 'failing', 'gap', 'unconfirmed', 'late', 'ok'], state)
$$;

CREATE VIEW enrolled_hosts AS
SELECT host,
       count(*) FILTER (WHERE retired_at IS NULL) AS active_keys,
       count(*) FILTER (WHERE retired_at IS NOT NULL) AS retired_keys,
       min(enrolled_at) AS enrolled_at
  FROM host_keys
 GROUP BY host;

CREATE VIEW chain_status AS
SELECT hc.host, hc.events, hc.last_seq,
       hc.last_seq - hc.events AS missing,
       (SELECT count(*) FROM chain_breaks b WHERE b.host = hc.host) AS breaks,
       hc.first_received_at, hc.last_received_at
  FROM host_chain hc;

-- The seq ranges a host's chain is missing (one host's events, through its (host, seq) index).
CREATE FUNCTION chain_gaps(p_host text) RETURNS TABLE (first_missing bigint, last_missing bigint)
LANGUAGE sql STABLE AS $$
    WITH present AS (SELECT seq FROM events WHERE host = p_host UNION ALL SELECT 0),
         ordered AS (SELECT seq, lead(seq) OVER (ORDER BY seq) AS next_seq FROM present)
    SELECT seq + 1, next_seq - 1 FROM ordered WHERE next_seq > seq + 1 ORDER BY seq
$$;

-- One row per (host, job, kind) that has reported, with its state:
--   stale        periodic, and no success for stale_cadence_factor x cadence (or
--                stale_without_cadence for a backup that declares no cadence)
--   failing      the latest run failed
--   gap          the host's chain misses manifests or has a broken link
--   unconfirmed  a backup claimed a snapshot in a REST (hub) repository that no hub receipt
--                confirmed within unconfirmed_grace (claims older than unconfirmed_window are let go)
--   late         the next run is overdue: cadence + max(late_grace_minimum, cadence x late_grace_fraction)
--   ok           none of the above
-- plus one row with state missing (job and kind NULL) per enrolled host that never reported.
CREATE VIEW fleet_status AS
SELECT js.host, js.job, js.kind,
       CASE
           WHEN due.stale_at < now() THEN 'stale'
           WHEN js.last_status = 'failure' THEN 'failing'
           WHEN cs.missing > 0 OR cs.breaks > 0 THEN 'gap'
           WHEN awaiting.unconfirmed > 0 THEN 'unconfirmed'
           WHEN due.late_at < now() THEN 'late'
           ELSE 'ok'
       END AS state,
       js.last_status, js.last_event_id, js.last_seq, js.last_started_at, js.last_finished_at,
       extract(epoch FROM js.last_finished_at - js.last_started_at)::double precision AS last_duration_seconds,
       js.last_data_added, js.last_snapshot_id, js.cadence_seconds,
       js.last_success_event_id, js.last_success_at, js.first_run_at, js.runs, js.failures,
       due.late_at, due.stale_at,
       cs.missing AS chain_missing, cs.breaks AS chain_breaks,
       awaiting.unconfirmed AS unconfirmed_snapshots
  FROM job_status js
 CROSS JOIN status_policy policy
  JOIN chain_status cs ON cs.host = js.host
 CROSS JOIN LATERAL (
       SELECT js.last_finished_at + js.cadence_seconds * interval '1 second'
                + greatest(policy.late_grace_minimum,
                           (js.cadence_seconds * policy.late_grace_fraction)::double precision * interval '1 second')
                  AS late_at,
              CASE
                  WHEN js.cadence_seconds IS NOT NULL
                      THEN coalesce(js.last_success_at, js.first_run_at)
                           + (js.cadence_seconds * policy.stale_cadence_factor)::double precision * interval '1 second'
                  WHEN js.kind = 'backup'
                      THEN coalesce(js.last_success_at, js.first_run_at) + policy.stale_without_cadence
              END AS stale_at
       ) due
 CROSS JOIN LATERAL (
       SELECT count(*) AS unconfirmed
         FROM snapshots s
        WHERE js.kind = 'backup'
          AND s.host = js.host AND s.job = js.job
          AND s.receipt_event_id IS NULL AND s.claim_event_id IS NOT NULL
          AND s.claimed_at < now() - policy.unconfirmed_grace
          AND s.claimed_at > now() - policy.unconfirmed_window
          AND s.repository_url LIKE 'rest:%'
       ) awaiting
UNION ALL
SELECT eh.host, NULL, NULL, 'missing',
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL
  FROM enrolled_hosts eh
 WHERE eh.active_keys > 0
   AND NOT EXISTS (SELECT 1 FROM host_chain hc WHERE hc.host = eh.host);

-- One row per host: its worst state and what its jobs add up to.
CREATE VIEW host_status AS
SELECT f.host,
       (array_agg(f.state ORDER BY bk_state_rank(f.state)))[1] AS state,
       count(f.kind) AS jobs,
       count(*) FILTER (WHERE f.state <> 'ok' AND f.kind IS NOT NULL) AS jobs_not_ok,
       max(f.last_finished_at) AS last_run_at,
       max(f.last_success_at) AS last_success_at,
       coalesce(eh.active_keys, 0) AS active_keys,
       cs.events, cs.last_seq, cs.missing AS chain_missing, cs.breaks AS chain_breaks, cs.last_received_at
  FROM fleet_status f
  LEFT JOIN enrolled_hosts eh ON eh.host = f.host
  LEFT JOIN chain_status cs ON cs.host = f.host
 GROUP BY f.host, eh.active_keys, cs.events, cs.last_seq, cs.missing, cs.breaks, cs.last_received_at;

-- Per snapshot: host claim -> hub receipt -> offsite presence. host is the claiming host
-- (NULL until its claim arrives; hub_repository then names the client).
CREATE VIEW snapshot_lineage AS
SELECT s.snapshot_id,
       s.host,
       s.job, s.repository_name, s.repository_url,
       s.claim_event_id IS NOT NULL AS claimed,
       s.receipt_event_id IS NOT NULL AS received,
       coalesce(offsite.destinations, 0) > 0 AS offsite,
       s.claimed_at, s.claim_event_id,
       s.hub_host, s.hub_repository, s.arrived_at, s.size_bytes, s.receipt_event_id,
       s.first_offsite_at, coalesce(offsite.destinations, 0) AS offsite_destinations,
       offsite.names AS offsite_destination_names,
       extract(epoch FROM s.arrived_at - s.claimed_at)::double precision AS hub_lag_seconds,
       extract(epoch FROM s.first_offsite_at - coalesce(s.arrived_at, s.claimed_at))::double precision
           AS offsite_lag_seconds
  FROM snapshots s
  LEFT JOIN LATERAL (
       SELECT count(*) AS destinations, array_agg(o.destination ORDER BY o.destination) AS names
         FROM snapshot_offsite o WHERE o.snapshot_id = s.snapshot_id
       ) offsite ON true;

-- Events without their raw text, with the figures charts want.
CREATE VIEW event_facts AS
SELECT id, host, seq, prev, sha256, kind, status, job, started_at, finished_at, received_at,
       extract(epoch FROM finished_at - started_at)::double precision AS duration_seconds,
       extract(epoch FROM received_at - finished_at)::double precision AS delivery_delay_seconds,
       key_fingerprint, repository_name, repository_url, snapshot_id, cadence_seconds,
       data_added, files_new, files_changed, files_unmodified, bytes_processed
  FROM events;
