-- Privileges of the application role (setting app_role, written {app} below), re-applied by
-- `bk-reporter migrate` after the numbered migrations. The application reads everything and
-- may add events, nothing else: derived state is written by the owner's trigger function.

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {app};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {app};
GRANT INSERT ON events TO {app};
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {app};
-- Notifications (0030): the evaluator appends transitions and delivery attempts, the CLI silences.
GRANT INSERT ON alert_transitions, notification_attempts, alert_silences TO {app};
