-- Refused manifests whose refusal is a security event (issue 16): a signature that does not
-- verify, a key that is not enrolled (or is retired), a key used for another host. Someone
-- holds, or claims, a key it should not; the notification evaluator tells it (condition
-- `refused`), and the rows stay as the record of it.
--
-- Append-only like events (0001): the application role may INSERT and SELECT, triggers refuse
-- UPDATE, DELETE and TRUNCATE outside a maintenance session. Never the body: what the manifest
-- claimed is only its host, and the message is the reporter's own answer, truncated.
-- code 'refusals_dropped' records that a client sent more refusals than are recorded a minute
-- (bk_reporter.refusals); its message says how many were not.
CREATE TABLE refusals (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at     timestamptz NOT NULL,
    client          text,                   -- the peer address (X-Forwarded-For's behind forwarded_allow_ips)
    code            text        NOT NULL,
    claimed_host    text,                   -- the manifest's `host`, when it could be read
    key_fingerprint text,                   -- the key the signature names, when it could be read
    message         text        NOT NULL CHECK (length(message) <= 500)
);
CREATE INDEX refusals_by_host ON refusals (claimed_host, received_at);
CREATE INDEX refusals_by_time ON refusals (received_at);

CREATE TRIGGER refusals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON refusals
    FOR EACH STATEMENT EXECUTE FUNCTION bk_refuse_change();
