-- Derived state: what the reads need, maintained in the same transaction as each insert
-- into events, so that no read ever scans all events. These tables are not evidence: they
-- can be rebuilt from events, and `bk-reporter audit` compares them with it.
--
-- The application role can only read them; the statement trigger at the end of this file
-- runs with the owner's rights (SECURITY DEFINER) and is the only writer.

-- The thresholds the states in fleet_status are computed with. One row; the owner may
-- change it (UPDATE status_policy SET ...).
CREATE TABLE status_policy (
    singleton                boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
    late_grace_fraction      numeric  NOT NULL DEFAULT 0.25 CHECK (late_grace_fraction >= 0),
    late_grace_minimum       interval NOT NULL DEFAULT '10 minutes',
    stale_cadence_factor     numeric  NOT NULL DEFAULT 2 CHECK (stale_cadence_factor >= 1),
    stale_without_cadence    interval NOT NULL DEFAULT '48 hours',
    unconfirmed_grace        interval NOT NULL DEFAULT '3 hours',
    unconfirmed_window       interval NOT NULL DEFAULT '14 days'
);
INSERT INTO status_policy DEFAULT VALUES;

-- Per machine that signs manifests: how far its chain goes and how much of it arrived.
-- Seqs are unique and start at 1, so last_seq - events is the number of missing manifests.
CREATE TABLE host_chain (
    host              text        PRIMARY KEY,
    events            bigint      NOT NULL,
    last_seq          bigint      NOT NULL,
    first_received_at timestamptz NOT NULL,
    last_received_at  timestamptz NOT NULL
);

-- Links that do not hold: the manifest at `seq` names as prev something other than the
-- SHA-256 of the manifest at seq - 1 (a fork, a rewritten history or a forgery by an enrolled
-- key), or seq 1 names a predecessor.
CREATE TABLE chain_breaks (
    host          text        NOT NULL,
    seq           bigint      NOT NULL,
    expected_prev text,
    found_prev    text,
    detected_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, seq)
);

-- Latest run and latest success per (host, job, kind). job is '' when manifests name none.
-- "Success" includes status warning: the run produced its result (restic stored a snapshot
-- although some files were unreadable).
CREATE TABLE job_status (
    host                  text        NOT NULL,
    job                   text        NOT NULL,
    kind                  text        NOT NULL,
    first_run_at          timestamptz NOT NULL,
    runs                  bigint      NOT NULL DEFAULT 0,
    failures              bigint      NOT NULL DEFAULT 0,
    last_event_id         uuid        NOT NULL,
    last_seq              bigint      NOT NULL,
    last_status           text        NOT NULL,
    last_started_at       timestamptz NOT NULL,
    last_finished_at      timestamptz NOT NULL,
    last_data_added       bigint,
    last_snapshot_id      text,
    cadence_seconds       bigint,
    last_success_event_id uuid,
    last_success_seq      bigint,
    last_success_at       timestamptz,
    PRIMARY KEY (host, job, kind)
);

-- Per snapshot, the three sides of the 3-2-1 proof: the host's claim (a backup manifest),
-- the hub's receipt (a hub-receipt manifest from the hub's own key naming the snapshot file
-- it saw arrive) and offsite presence (snapshot_offsite). Any side may arrive first.
CREATE TABLE snapshots (
    snapshot_id      text        PRIMARY KEY,
    host             text,                 -- the claiming host
    job              text,                 -- as in job_status: '' when the claim names no job
    repository_name  text,
    repository_url   text,
    claimed_at       timestamptz,
    claim_event_id   uuid,
    hub_host         text,                 -- the hub that signed the receipt
    hub_repository   text,                 -- the hub's repository directory (the client's name)
    arrived_at       timestamptz,
    size_bytes       bigint,
    receipt_event_id uuid,
    first_offsite_at timestamptz
);

CREATE INDEX snapshots_awaiting_receipt ON snapshots (host, job, claimed_at)
    WHERE receipt_event_id IS NULL AND claim_event_id IS NOT NULL;
CREATE INDEX snapshots_by_claim ON snapshots (host, claimed_at) WHERE claim_event_id IS NOT NULL;

CREATE TABLE snapshot_offsite (
    snapshot_id     text        NOT NULL,
    destination     text        NOT NULL,
    hub_host        text        NOT NULL,
    repository_name text,
    first_seen_at   timestamptz NOT NULL,
    event_id        uuid        NOT NULL,
    PRIMARY KEY (snapshot_id, destination)
);

-- Each statement below touches a few rows per inserted event, found through indexes. The
-- planner cannot know how many rows `inserted` holds (PL/pgSQL keeps the plan made for the
-- first batch), and a hash or merge join would read whole tables for every insert: the
-- function turns those join methods off so that cost follows the batch, never the history.
CREATE FUNCTION bk_derive_from_inserted_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    -- Chain state first, in host order: its row locks serialise concurrent inserts for one
    -- host, so the link checks below see every committed neighbour.
    INSERT INTO host_chain AS hc (host, events, last_seq, first_received_at, last_received_at)
    SELECT host, count(*), max(seq), min(received_at), max(received_at)
      FROM inserted GROUP BY host ORDER BY host
    ON CONFLICT (host) DO UPDATE SET
        events = hc.events + excluded.events,
        last_seq = greatest(hc.last_seq, excluded.last_seq),
        last_received_at = greatest(hc.last_received_at, excluded.last_received_at);

    WITH links AS (
        SELECT e.host, e.seq, earlier.sha256 AS expected_prev, e.prev AS found_prev
          FROM inserted e JOIN events earlier ON earlier.host = e.host AND earlier.seq = e.seq - 1
        UNION
        SELECT later.host, later.seq, e.sha256, later.prev
          FROM inserted e JOIN events later ON later.host = e.host AND later.seq = e.seq + 1
        UNION
        SELECT e.host, e.seq, NULL, e.prev FROM inserted e WHERE e.seq = 1
    )
    INSERT INTO chain_breaks (host, seq, expected_prev, found_prev)
    SELECT host, seq, expected_prev, found_prev FROM links
     WHERE found_prev IS DISTINCT FROM expected_prev
    ON CONFLICT (host, seq) DO NOTHING;

    -- Latest run per (host, job, kind): replaced only by a run that finished later.
    INSERT INTO job_status AS js (host, job, kind, first_run_at, last_event_id, last_seq, last_status,
                                  last_started_at, last_finished_at, last_data_added, last_snapshot_id,
                                  cadence_seconds)
    SELECT DISTINCT ON (host, coalesce(job, ''), kind)
           host, coalesce(job, ''), kind, started_at, id, seq, status,
           started_at, finished_at, data_added, snapshot_id, cadence_seconds
      FROM inserted
     ORDER BY host, coalesce(job, ''), kind, finished_at DESC, seq DESC
    ON CONFLICT (host, job, kind) DO UPDATE SET
        last_event_id = excluded.last_event_id,
        last_seq = excluded.last_seq,
        last_status = excluded.last_status,
        last_started_at = excluded.last_started_at,
        last_finished_at = excluded.last_finished_at,
        last_data_added = excluded.last_data_added,
        last_snapshot_id = excluded.last_snapshot_id,
        cadence_seconds = coalesce(excluded.cadence_seconds, js.cadence_seconds)
    WHERE (excluded.last_finished_at, excluded.last_seq) > (js.last_finished_at, js.last_seq);

    UPDATE job_status js SET
        runs = js.runs + counted.runs,
        failures = js.failures + counted.failures,
        first_run_at = least(js.first_run_at, counted.first_run_at)
      FROM (SELECT host, coalesce(job, '') AS job, kind, count(*) AS runs,
                   count(*) FILTER (WHERE status = 'failure') AS failures, min(started_at) AS first_run_at
              FROM inserted GROUP BY 1, 2, 3) counted
     WHERE (js.host, js.job, js.kind) = (counted.host, counted.job, counted.kind);

    UPDATE job_status js SET
        last_success_event_id = success.id,
        last_success_seq = success.seq,
        last_success_at = success.finished_at
      FROM (SELECT DISTINCT ON (host, coalesce(job, ''), kind)
                   host, coalesce(job, '') AS job, kind, id, seq, finished_at
              FROM inserted WHERE status IN ('success', 'warning')
             ORDER BY host, coalesce(job, ''), kind, finished_at DESC, seq DESC) success
     WHERE (js.host, js.job, js.kind) = (success.host, success.job, success.kind)
       AND (js.last_success_at IS NULL
            OR (success.finished_at, success.seq) > (js.last_success_at, js.last_success_seq));

    -- Lineage: the host's claim.
    INSERT INTO snapshots AS s (snapshot_id, host, job, repository_name, repository_url, claimed_at, claim_event_id)
    SELECT DISTINCT ON (snapshot_id) snapshot_id, host, coalesce(job, ''), repository_name, repository_url, finished_at, id
      FROM inserted WHERE kind = 'backup' AND snapshot_id IS NOT NULL
     ORDER BY snapshot_id, finished_at
    ON CONFLICT (snapshot_id) DO UPDATE SET
        host = excluded.host, job = excluded.job, repository_name = excluded.repository_name,
        repository_url = excluded.repository_url, claimed_at = excluded.claimed_at,
        claim_event_id = excluded.claim_event_id
    WHERE s.claim_event_id IS NULL;

    -- Lineage from the hub's manifests; most batches hold none, and then skip these statements.
    IF EXISTS (SELECT FROM inserted WHERE kind IN ('hub-receipt', 'offsite-copy')) THEN
        -- Lineage: the hub's receipt.
        INSERT INTO snapshots AS s (snapshot_id, hub_host, hub_repository, arrived_at, size_bytes, receipt_event_id)
        SELECT DISTINCT ON (item.snapshot) item.snapshot, e.host, e.repository_name,
               coalesce(item.arrived_at, e.finished_at), item.size, e.id
          FROM inserted e, jsonb_to_recordset(e.lineage) AS item(snapshot text, arrived_at timestamptz, size bigint)
         WHERE e.kind = 'hub-receipt'
         ORDER BY item.snapshot, e.finished_at
        ON CONFLICT (snapshot_id) DO UPDATE SET
            hub_host = excluded.hub_host, hub_repository = excluded.hub_repository,
            arrived_at = excluded.arrived_at, size_bytes = excluded.size_bytes,
            receipt_event_id = excluded.receipt_event_id
        WHERE s.receipt_event_id IS NULL;

        -- Lineage: presence at an offsite destination.
        INSERT INTO snapshot_offsite (snapshot_id, destination, hub_host, repository_name, first_seen_at, event_id)
        SELECT DISTINCT ON (item.snapshot, item.destination)
               item.snapshot, item.destination, e.host, e.repository_name, e.finished_at, e.id
          FROM inserted e, jsonb_to_recordset(e.lineage) AS item(snapshot text, destination text)
         WHERE e.kind = 'offsite-copy'
         ORDER BY item.snapshot, item.destination, e.finished_at
        ON CONFLICT (snapshot_id, destination) DO NOTHING;

        INSERT INTO snapshots AS s (snapshot_id, first_offsite_at)
        SELECT item.snapshot, min(e.finished_at)
          FROM inserted e, jsonb_to_recordset(e.lineage) AS item(snapshot text)
         WHERE e.kind = 'offsite-copy'
         GROUP BY item.snapshot ORDER BY item.snapshot
        ON CONFLICT (snapshot_id) DO UPDATE SET
            first_offsite_at = least(s.first_offsite_at, excluded.first_offsite_at)
        WHERE s.first_offsite_at IS NULL OR excluded.first_offsite_at < s.first_offsite_at;
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER events_derive AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION bk_derive_from_inserted_events();
