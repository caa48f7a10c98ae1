-- What the web pages and the Grafana dashboards read, beyond the views of 0003.
--
-- Every read here is bounded: the pages read derived state, primary keys, and at most a
-- fixed number of recent runs per (host, job, kind) through events_by_host_job_kind_time;
-- Grafana panels read the grafana_* views below with a time filter on an indexed column.

-- The latest runs of one (host, job, kind), newest first, without visiting any other run:
-- sparklines, trend charts and restore drills read `LIMIT n` rows each through it.
-- job is coalesced to '' as in job_status.
CREATE INDEX events_by_host_job_kind_time ON events (host, (coalesce(job, '')), kind, finished_at);

-- Claimed snapshots by time, for grafana_offsite_lag's time filter.
CREATE INDEX snapshots_claimed_by_time ON snapshots (claimed_at) WHERE claim_event_id IS NOT NULL;

-- Snapshots the hub received that no host claimed (a withheld or lost backup manifest), by
-- the hub repository they arrived in: shown on the host page. Normally empty.
CREATE INDEX snapshots_unclaimed ON snapshots (hub_repository, arrived_at) WHERE claim_event_id IS NULL;

-- Host groups are not part of the evidence: a host's group is the leading letters of its
-- name, lower-cased (web-03 -> web, db2.example.org -> db); a name without leading letters
-- is its own group.
CREATE FUNCTION bk_host_group(p_host text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(lower(substring(p_host FROM '^[A-Za-z]+')), p_host)
$$;

-- restic prints sizes as "12.345 MiB"; NULL for anything else.
CREATE FUNCTION bk_restic_size_bytes(size text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (parts[1]::numeric
            * power(1024::numeric, array_position(ARRAY['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'], parts[2]) - 1))::bigint
      FROM regexp_match(size, '^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|TiB|PiB)\s*$') AS parts
$$;

-- The size of each hub repository after its latest prune (`prune.remaining_size` of the
-- hub's prune manifests): derived state, maintained like 0002's, rebuildable from events.
CREATE TABLE repository_sizes (
    hub_host        text        NOT NULL,
    repository_name text        NOT NULL,   -- the hub's repository directory (the client's name)
    size_bytes      bigint,                 -- NULL when restic's text could not be read
    size_text       text        NOT NULL,   -- as restic printed it
    measured_at     timestamptz NOT NULL,
    event_id        uuid        NOT NULL,
    PRIMARY KEY (hub_host, repository_name)
);

CREATE FUNCTION bk_derive_repository_sizes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO repository_sizes AS r (hub_host, repository_name, size_bytes, size_text, measured_at, event_id)
    SELECT DISTINCT ON (host, repository_name)
           host, repository_name, bk_restic_size_bytes(size_text), size_text, finished_at, id
      FROM (SELECT host, repository_name, finished_at, id, manifest::jsonb #>> '{prune,remaining_size}' AS size_text
              FROM inserted
             WHERE kind = 'prune' AND repository_name IS NOT NULL) pruned
     WHERE size_text IS NOT NULL
     ORDER BY host, repository_name, finished_at DESC
    ON CONFLICT (hub_host, repository_name) DO UPDATE SET
        size_bytes = excluded.size_bytes, size_text = excluded.size_text,
        measured_at = excluded.measured_at, event_id = excluded.event_id
    WHERE excluded.measured_at > r.measured_at;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_derive_repository_sizes AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION bk_derive_repository_sizes();

-- fleet_status with what the pages sort, filter and explain by: the host's group, the
-- state's rank (worst first) and when the next run was due.
CREATE VIEW fleet_overview AS
SELECT f.host, bk_host_group(f.host) AS host_group, f.job, f.kind, f.state, bk_state_rank(f.state) AS state_rank,
       f.last_status, f.last_event_id, f.last_seq, f.last_started_at, f.last_finished_at, f.last_duration_seconds,
       f.last_data_added, f.last_snapshot_id, f.cadence_seconds, f.last_success_event_id, f.last_success_at,
       f.first_run_at, f.runs, f.failures, f.late_at, f.stale_at,
       f.last_finished_at + f.cadence_seconds * interval '1 second' AS next_due_at,
       f.chain_missing, f.chain_breaks, f.unconfirmed_snapshots
  FROM fleet_status f;

-- ---------------------------------------------------------------------------------------
-- Grafana: one view per thing a panel shows. Panels filter them with $__timeFilter on the
-- `time` column, which is an indexed column of the underlying table.

-- How many (host, job, kind) are in each state, every state listed (0 when none).
CREATE VIEW grafana_fleet_states AS
SELECT states.state, states.rank AS state_rank, count(f.state) AS jobs
  FROM unnest(ARRAY['stale', 'missing', 'failing', 'gap', 'unconfirmed', 'late', 'ok']) WITH ORDINALITY
       AS states(state, rank)
  LEFT JOIN fleet_status f ON f.state = states.state
 GROUP BY states.state, states.rank;

-- Every (host, job, kind) with its state and how overdue it is.
CREATE VIEW grafana_job_states AS
SELECT host, host_group, job, kind, state, state_rank, last_status, last_finished_at, last_success_at,
       extract(epoch FROM now() - last_success_at)::double precision AS last_success_age_seconds,
       greatest(extract(epoch FROM now() - next_due_at), 0)::double precision AS overdue_seconds,
       cadence_seconds, runs, failures
  FROM fleet_overview;

-- Every run of every kind: what success and failure rates count.
CREATE VIEW grafana_runs AS
SELECT finished_at AS time, host, bk_host_group(host) AS host_group, coalesce(job, '') AS job, kind, status,
       (status <> 'failure')::integer AS succeeded, (status = 'failure')::integer AS failed,
       extract(epoch FROM finished_at - started_at)::double precision AS duration_seconds
  FROM events;

-- Every backup run with restic's figures: frequency, durations, data growth.
CREATE VIEW grafana_backup_runs AS
SELECT finished_at AS time, host, bk_host_group(host) AS host_group, coalesce(job, '') AS job, status,
       extract(epoch FROM finished_at - started_at)::double precision AS duration_seconds,
       data_added, files_new, files_changed, files_unmodified, bytes_processed AS bytes_processed,
       snapshot_id
  FROM events
 WHERE kind = 'backup';

-- Per claimed snapshot: how long the hub receipt and the first offsite copy took after the
-- host's claim, and for how long a snapshot has been waiting for either.
CREATE VIEW grafana_offsite_lag AS
SELECT s.claimed_at AS time, s.host, bk_host_group(s.host) AS host_group, s.job, s.snapshot_id,
       s.receipt_event_id IS NOT NULL AS received, s.first_offsite_at IS NOT NULL AS offsite,
       extract(epoch FROM s.arrived_at - s.claimed_at)::double precision AS hub_lag_seconds,
       extract(epoch FROM s.first_offsite_at - s.claimed_at)::double precision AS offsite_lag_seconds,
       CASE WHEN s.first_offsite_at IS NULL THEN extract(epoch FROM now() - s.claimed_at)::double precision
       END AS waiting_seconds
  FROM snapshots s
 WHERE s.claim_event_id IS NOT NULL;

-- The latest known size of each hub repository.
CREATE VIEW grafana_repository_sizes AS
SELECT repository_name AS repository, hub_host, size_bytes, size_text, measured_at AS time
  FROM repository_sizes;
