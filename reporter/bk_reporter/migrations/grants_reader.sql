-- Privileges of the optional read-only role (setting reader_role), re-applied by
-- `bk-reporter migrate`: the named views, nothing else.

GRANT USAGE ON SCHEMA public TO {reader};
GRANT SELECT ON enrolled_hosts, chain_status, fleet_status, host_status, snapshot_lineage, event_facts, status_policy
    TO {reader};
