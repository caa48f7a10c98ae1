-- Notifications: what the evaluator decided about each alert and every attempt to tell someone.
--
-- Both tables are append-only like events (0001): the application role may INSERT and SELECT,
-- triggers refuse UPDATE, DELETE and TRUNCATE outside a maintenance session. An alert's state
-- is therefore a log of transitions; alert_current_state names the latest one per key.

-- One row per transition of an alert, keyed by (host, job, condition). job is '' for
-- host-wide and hub-wide conditions. kind says what happened:
--   fire      the condition entered the bad state (or came back after a recovery)
--   repeat    still bad after repeat_interval: tell again
--   recover   the condition cleared
--   held      bad, but explained by a grouped alert (hub unreachable): not told separately
--   silenced  bad, but a silence covers it
CREATE TABLE alert_transitions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host        text        NOT NULL,
    job         text        NOT NULL DEFAULT '',
    condition   text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('fire', 'repeat', 'recover', 'held', 'silenced')),
    severity    text        NOT NULL CHECK (severity IN ('warning', 'critical', 'security')),
    summary     text        NOT NULL,
    since       timestamptz NOT NULL,   -- when the condition began, by the evidence's own times
    decided_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_transitions_by_key ON alert_transitions (host, job, condition, id DESC);

CREATE VIEW alert_current_state AS
SELECT DISTINCT ON (host, job, condition)
       host, job, condition, kind, severity, summary, since, decided_at, id AS transition_id
  FROM alert_transitions
 ORDER BY host, job, condition, id DESC;

-- One row per attempt to deliver a transition to a route. A message is recorded as 'pending'
-- before it is sent and its outcome after, in a new row: a crash in between leaves a pending
-- attempt that the next evaluation sends again (maybe twice, never not at all).
CREATE TABLE notification_attempts (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transition_id bigint      NOT NULL REFERENCES alert_transitions (id),
    route         text        NOT NULL,
    attempt       integer     NOT NULL CHECK (attempt >= 1),
    outcome       text        NOT NULL CHECK (outcome IN ('pending', 'sent', 'failed')),
    error         text,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_attempts_by_transition ON notification_attempts (transition_id, route, id DESC);

-- The latest word on each (transition, route): pending or failed ones are still to be sent.
CREATE VIEW notification_delivery_state AS
SELECT DISTINCT ON (a.transition_id, a.route)
       a.transition_id, a.route, a.attempt, a.outcome, a.error, a.recorded_at,
       t.host, t.job, t.condition, t.kind, t.severity, t.summary
  FROM notification_attempts a
  JOIN alert_transitions t ON t.id = a.transition_id
 ORDER BY a.transition_id, a.route, a.id DESC;

-- Silences, set from the CLI only. A silence is never changed; a later one with an earlier
-- `until` ends it. job '' silences every job of the host.
CREATE TABLE alert_silences (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host        text        NOT NULL,
    job         text        NOT NULL DEFAULT '',
    until       timestamptz NOT NULL,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW alert_active_silences AS
SELECT DISTINCT ON (host, job) host, job, until, reason, created_at
  FROM alert_silences
 ORDER BY host, job, id DESC;

CREATE TRIGGER alert_transitions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON alert_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION bk_refuse_change();
CREATE TRIGGER notification_attempts_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON notification_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION bk_refuse_change();
CREATE TRIGGER alert_silences_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON alert_silences
    FOR EACH STATEMENT EXECUTE FUNCTION bk_refuse_change();
