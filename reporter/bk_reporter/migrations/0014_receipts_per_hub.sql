-- Receipts per hub. A hub's receipt confirms a claimed snapshot only when it comes from the
-- hub the claim names (repository.hub: the client's hub in the inventory) and from the
-- claiming host's own repository directory, so that one enrolled hub cannot vouch for a
-- snapshot stored on another, and a receipt that arrives first cannot hold a snapshot's
-- place for good. Every receipt is kept (snapshot_receipts); the one a snapshot shows is
-- chosen by that rule. A claim without repository.hub accepts any hub, from the claiming
-- host's directory.

ALTER TABLE snapshots ADD COLUMN claimed_hub text;  -- the hub the claim names; NULL: any hub

CREATE TABLE snapshot_receipts (
    snapshot_id      text        NOT NULL,
    hub_host         text        NOT NULL,  -- the hub that signed the receipt
    hub_repository   text        NOT NULL,  -- the hub's repository directory it was seen in
    arrived_at       timestamptz,
    size_bytes       bigint,
    receipt_event_id uuid        NOT NULL,
    PRIMARY KEY (snapshot_id, hub_host, hub_repository)
);

CREATE FUNCTION bk_receipt_confirms(claim_host text, claimed_hub text, hub_host text, hub_repository text)
RETURNS boolean LANGUAGE sql IMMUTABLE
AS $$ SELECT hub_repository = claim_host AND (claimed_hub IS NULL OR hub_host = claimed_hub) $$;

-- The receipt each of these snapshots shows: before its claim, the earliest of any hub (a
-- snapshot the hub saw and no host claimed yet); after it, the earliest that confirms the
-- claim, or none.
CREATE FUNCTION bk_choose_receipts(touched text[]) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    UPDATE snapshots s SET hub_host = NULL, hub_repository = NULL, arrived_at = NULL, size_bytes = NULL,
                           receipt_event_id = NULL
     WHERE s.snapshot_id = ANY (touched) AND s.receipt_event_id IS NOT NULL AND s.claim_event_id IS NOT NULL
       AND NOT bk_receipt_confirms(s.host, s.claimed_hub, s.hub_host, s.hub_repository);

    INSERT INTO snapshots AS s (snapshot_id, hub_host, hub_repository, arrived_at, size_bytes, receipt_event_id)
    SELECT DISTINCT ON (r.snapshot_id) r.snapshot_id, r.hub_host, r.hub_repository, r.arrived_at, r.size_bytes,
           r.receipt_event_id
      FROM snapshot_receipts r
      LEFT JOIN snapshots claim ON claim.snapshot_id = r.snapshot_id
     WHERE r.snapshot_id = ANY (touched)
       AND (claim.claim_event_id IS NULL
            OR bk_receipt_confirms(claim.host, claim.claimed_hub, r.hub_host, r.hub_repository))
     ORDER BY r.snapshot_id, r.arrived_at, r.receipt_event_id
    ON CONFLICT (snapshot_id) DO UPDATE SET
        hub_host = excluded.hub_host, hub_repository = excluded.hub_repository,
        arrived_at = excluded.arrived_at, size_bytes = excluded.size_bytes,
        receipt_event_id = excluded.receipt_event_id
    WHERE s.receipt_event_id IS NULL;
$$;

CREATE OR REPLACE FUNCTION bk_derive_from_inserted_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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

    -- Lineage: the host's claim, with the hub it names (a backup's lineage [{snapshot, hub}]).
    INSERT INTO snapshots AS s (snapshot_id, host, job, repository_name, repository_url, claimed_at, claim_event_id,
                                claimed_hub)
    SELECT DISTINCT ON (snapshot_id) snapshot_id, host, coalesce(job, ''), repository_name, repository_url, finished_at, id,
           lineage -> 0 ->> 'hub'
      FROM inserted WHERE kind = 'backup' AND snapshot_id IS NOT NULL
     ORDER BY snapshot_id, finished_at
    ON CONFLICT (snapshot_id) DO UPDATE SET
        host = excluded.host, job = excluded.job, repository_name = excluded.repository_name,
        repository_url = excluded.repository_url, claimed_at = excluded.claimed_at,
        claim_event_id = excluded.claim_event_id, claimed_hub = excluded.claimed_hub
    WHERE s.claim_event_id IS NULL;

    -- Lineage from the hub's manifests; most batches hold none, and then skip these statements.
    IF EXISTS (SELECT FROM inserted WHERE kind IN ('hub-receipt', 'offsite-copy')) THEN
        -- Every hub's receipt is kept; which one confirms a claim is decided below.
        INSERT INTO snapshot_receipts (snapshot_id, hub_host, hub_repository, arrived_at, size_bytes, receipt_event_id)
        SELECT DISTINCT ON (item.snapshot, e.host, e.repository_name) item.snapshot, e.host, e.repository_name,
               coalesce(item.arrived_at, e.finished_at), item.size, e.id
          FROM inserted e, jsonb_to_recordset(e.lineage) AS item(snapshot text, arrived_at timestamptz, size bigint)
         WHERE e.kind = 'hub-receipt' AND e.repository_name IS NOT NULL
         ORDER BY item.snapshot, e.host, e.repository_name, e.finished_at
        ON CONFLICT (snapshot_id, hub_host, hub_repository) DO NOTHING;

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

    -- Lineage: the receipt shown on each snapshot this batch touched.
    PERFORM bk_choose_receipts(ARRAY(
        SELECT snapshot_id FROM inserted WHERE kind = 'backup' AND snapshot_id IS NOT NULL
        UNION
        SELECT item.snapshot FROM inserted e, jsonb_to_recordset(e.lineage) AS item(snapshot text)
         WHERE e.kind = 'hub-receipt'));

    RETURN NULL;
END
$$;

-- Receipts already stored: keep them all, then apply the rule to every snapshot.
INSERT INTO snapshot_receipts (snapshot_id, hub_host, hub_repository, arrived_at, size_bytes, receipt_event_id)
SELECT DISTINCT ON (item.snapshot, e.host, e.repository_name) item.snapshot, e.host, e.repository_name,
       coalesce(item.arrived_at, e.finished_at), item.size, e.id
  FROM events e, jsonb_to_recordset(e.lineage) AS item(snapshot text, arrived_at timestamptz, size bigint)
 WHERE e.kind = 'hub-receipt' AND e.repository_name IS NOT NULL
 ORDER BY item.snapshot, e.host, e.repository_name, e.finished_at;

SELECT bk_choose_receipts(ARRAY(SELECT snapshot_id FROM snapshots));
