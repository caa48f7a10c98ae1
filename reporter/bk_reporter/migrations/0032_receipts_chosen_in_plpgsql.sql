-- bk_choose_receipts runs in every statement that stores events (bk_derive_receipts_per_hub),
-- and in most of them has nothing to choose: the claims' snapshots have no receipt yet. A SQL
-- function with SET clauses is planned afresh at every call, whatever the array holds, which
-- costs more than the rest of the derived state of a one-manifest statement together
-- (docs/benchmarks.md). In PL/pgSQL its plans are kept for the session, and an empty array
-- returns before any statement runs.
CREATE OR REPLACE FUNCTION bk_choose_receipts(touched text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    IF cardinality(touched) = 0 THEN
        RETURN;
    END IF;

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
END
$$;
