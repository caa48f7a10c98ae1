-- Privileges of the application role (setting app_role, written {app} below), re-applied by
-- `bk-reporter migrate` after the numbered migrations. The application reads everything and
-- may add events, nothing else: derived state is written by the owner's trigger function.
-- It may create nothing either: no temporary objects (a temporary table shadowing a derived
-- one is how a caller would steer the owner's trigger functions) and nothing in schema public
-- (PostgreSQL 13 and 14 grant PUBLIC that; 15 and later do not). {database} is the current one.

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {app};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {app};
GRANT INSERT ON events TO {app};
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {app};
REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC, {app};
REVOKE CREATE ON SCHEMA public FROM PUBLIC, {app};
-- Notifications (0030): the evaluator appends transitions and delivery attempts, the CLI silences.
GRANT INSERT ON alert_transitions, notification_attempts, alert_silences TO {app};
-- Refusals (0013): ingest appends them; they are never rewritten (like events).
GRANT INSERT ON refusals TO {app};
