-- The evidence: enrolled host keys and the append-only events table.
--
-- Nothing in this file is ever updated or deleted by the reporter. The application role
-- gets INSERT and SELECT on events and SELECT on host_keys (see grants.sql); on top of
-- that, triggers refuse UPDATE, DELETE and TRUNCATE of events even for the owner, unless
-- a maintenance session has said so explicitly:
--
--     BEGIN; SET LOCAL bk.maintenance = 'on'; ...; COMMIT;

CREATE FUNCTION bk_maintenance_session() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('bk.maintenance', true), '') = 'on'
$$;

CREATE FUNCTION bk_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF bk_maintenance_session() THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% on % refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'A maintenance session may override this with SET LOCAL bk.maintenance = ''on''.';
END
$$;

-- Keys are enrolled by the owner (`bk-reporter hosts add|import`), never learned from a request.
-- A key is identified by its fingerprint (SHA256:..., as `ssh-keygen -l` prints it).
CREATE TABLE host_keys (
    host        text        NOT NULL,
    fingerprint text        NOT NULL,
    public_key  text        NOT NULL,  -- "keytype base64", without comment
    key_type    text        NOT NULL,
    comment     text,
    enrolled_at timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz,           -- a retired key verifies history (audit), not new manifests
    PRIMARY KEY (host, fingerprint)
);

CREATE INDEX host_keys_active_by_fingerprint ON host_keys (fingerprint) WHERE retired_at IS NULL;

-- A key may be retired, once; nothing else about an enrolled key ever changes.
CREATE FUNCTION bk_host_keys_only_retire() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF bk_maintenance_session() THEN
        RETURN NEW;
    END IF;
    IF OLD.retired_at IS NULL AND NEW.retired_at IS NOT NULL
       AND (NEW.host, NEW.fingerprint, NEW.public_key, NEW.key_type, NEW.comment, NEW.enrolled_at)
           IS NOT DISTINCT FROM (OLD.host, OLD.fingerprint, OLD.public_key, OLD.key_type, OLD.comment, OLD.enrolled_at)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'UPDATE on host_keys refused: an enrolled key can only be retired, once'
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER host_keys_only_retire BEFORE UPDATE ON host_keys
    FOR EACH ROW EXECUTE FUNCTION bk_host_keys_only_retire();
CREATE TRIGGER host_keys_keep_history BEFORE DELETE OR TRUNCATE ON host_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bk_refuse_change();

-- One row per accepted manifest. `manifest` and `signature` are the bytes that were
-- verified, verbatim; every other column is extracted from `manifest` by the reporter
-- and re-checked against it by `bk-reporter audit`.
CREATE TABLE events (
    id               uuid        PRIMARY KEY,
    host             text        NOT NULL,
    seq              bigint      NOT NULL CHECK (seq >= 1),
    prev             text,                   -- hex SHA-256 of the host's previous manifest
    sha256           text        NOT NULL,   -- hex SHA-256 of `manifest` (what the next one's prev names)
    kind             text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('success', 'warning', 'failure')),
    job              text,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    key_fingerprint  text        NOT NULL,   -- the enrolled key that verified `signature`
    repository_name  text,
    repository_url   text,                   -- without credentials, as the manifest states it
    snapshot_id      text,                   -- the snapshot a backup manifest claims
    cadence_seconds  bigint,
    data_added       bigint,
    files_new        bigint,
    files_changed    bigint,
    files_unmodified bigint,
    bytes_processed  bigint,
    lineage          jsonb,                  -- hub receipts and offsite copies: [{snapshot, ...}]
    manifest         text        NOT NULL,
    signature        text        NOT NULL,
    UNIQUE (host, seq)
);

CREATE INDEX events_by_time ON events (finished_at, id);
CREATE INDEX events_by_host_time ON events (host, finished_at, id);

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION bk_refuse_change();
