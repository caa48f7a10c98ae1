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

-- The snapshots one hub-receipt event names, as snapshot_receipts rows (none for other kinds).
CREATE FUNCTION bk_receipt_items(event_kind text, signer text, directory text, items jsonb,
                                 finished timestamptz, event uuid)
RETURNS TABLE (snapshot_id text, hub_host text, hub_repository text, arrived_at timestamptz, size_bytes bigint,
               receipt_event_id uuid)
LANGUAGE sql IMMUTABLE
AS $$
    SELECT item.snapshot, signer, directory, coalesce(item.arrived_at, finished), item.size, event
      FROM jsonb_to_recordset(items) AS item(snapshot text, arrived_at timestamptz, size bigint)
     WHERE event_kind = 'hub-receipt' AND directory IS NOT NULL AND item.snapshot IS NOT NULL
$$;

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

-- bk_derive_from_inserted_events (0002) still records each claim and puts the first receipt it
-- sees on the snapshot; this trigger runs after it (triggers fire in name order), keeps every
-- receipt, records the hub each claim names, and replaces that first choice by the rule above.
CREATE FUNCTION bk_derive_receipts_per_hub() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    -- Most batches hold backups of clients that name no hub, or no receipt: those skip the work.
    IF EXISTS (SELECT FROM inserted WHERE kind = 'backup' AND lineage IS NOT NULL) THEN
        UPDATE snapshots s SET claimed_hub = e.lineage -> 0 ->> 'hub'
          FROM inserted e
         WHERE e.kind = 'backup' AND e.lineage IS NOT NULL
           AND s.snapshot_id = e.snapshot_id AND s.claim_event_id = e.id;
    END IF;

    IF EXISTS (SELECT FROM inserted WHERE kind = 'hub-receipt') THEN
        INSERT INTO snapshot_receipts (snapshot_id, hub_host, hub_repository, arrived_at, size_bytes, receipt_event_id)
        SELECT DISTINCT ON (r.snapshot_id, r.hub_host, r.hub_repository) r.*
          FROM inserted e, bk_receipt_items(e.kind, e.host, e.repository_name, e.lineage, e.finished_at, e.id) r
         WHERE e.kind = 'hub-receipt'
         ORDER BY r.snapshot_id, r.hub_host, r.hub_repository, r.arrived_at
        ON CONFLICT (snapshot_id, hub_host, hub_repository) DO NOTHING;
    END IF;

    -- A claim's snapshot needs choosing only if some hub has sent a receipt for it; most claims
    -- arrive before any receipt, and then this costs one index probe each.
    PERFORM bk_choose_receipts(ARRAY(
        SELECT r.snapshot_id FROM inserted e JOIN snapshot_receipts r ON r.snapshot_id = e.snapshot_id
         WHERE e.kind = 'backup'
        UNION
        SELECT item.snapshot FROM inserted e, jsonb_to_recordset(e.lineage) AS item(snapshot text)
         WHERE e.kind = 'hub-receipt'));
    RETURN NULL;
END
$$;

CREATE TRIGGER events_derive_receipts AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION bk_derive_receipts_per_hub();

-- Receipts and claims already stored: keep every receipt, then apply the rule to every snapshot.
INSERT INTO snapshot_receipts (snapshot_id, hub_host, hub_repository, arrived_at, size_bytes, receipt_event_id)
SELECT DISTINCT ON (r.snapshot_id, r.hub_host, r.hub_repository) r.*
  FROM events e, bk_receipt_items(e.kind, e.host, e.repository_name, e.lineage, e.finished_at, e.id) r
 WHERE e.kind = 'hub-receipt'
 ORDER BY r.snapshot_id, r.hub_host, r.hub_repository, r.arrived_at;

SELECT bk_choose_receipts(ARRAY(SELECT snapshot_id FROM snapshots));
