-- bk_choose_receipts runs in every statement that stores events (bk_derive_receipts_per_hub),
-- and in most of them has nothing to choose: the claims' snapshots have no receipt yet and the
-- array is empty. A SQL function with SET clauses is planned afresh at every call, whatever the
-- array holds, which costs more than the rest of the derived state of a one-manifest statement
-- together (docs/benchmarks.md). So the SQL function keeps its body under a new name and runs only
-- when there is something to choose; the PL/pgSQL function in front of it, whose plan is kept for
-- the session, returns at once for an empty array.
ALTER FUNCTION bk_choose_receipts(text[]) RENAME TO bk_choose_receipts_among;

CREATE FUNCTION bk_choose_receipts(touched text[]) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF cardinality(touched) > 0 THEN
        PERFORM bk_choose_receipts_among(touched);
    END IF;
END
$$;
