-- The derive functions run with the owner's rights on every `INSERT INTO events` by the
-- application role. A search_path fixed at creation time still resolves unqualified names
-- through the caller's temporary schema first (pg_temp is searched first unless it is named),
-- so a temporary table called host_chain with a trigger of its own would run as the owner.
-- Naming pg_temp last closes that; pg_catalog first keeps built-ins from being shadowed.
-- Every SECURITY DEFINER function of the schema must carry this setting
-- (tests/integration/test_reporter_definer_functions.py lists them all).

ALTER FUNCTION bk_derive_from_inserted_events() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION bk_derive_repository_size() SET search_path = pg_catalog, public, pg_temp;
