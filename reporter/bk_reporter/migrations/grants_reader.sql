-- Privileges of the optional read-only role (setting reader_role, written {reader} below; for
-- Grafana, say), re-applied by `bk-reporter migrate`: every view of the schema ({views}: the
-- named read interface, fleet_status, snapshot_lineage, the grafana_* views...) and no table.

GRANT USAGE ON SCHEMA public TO {reader};
GRANT SELECT ON {views} TO {reader};
