-- Reading stored manifests as JSON in SQL without letting one manifest break ingest or a page.
--
-- A manifest is valid JSON with any string in it, and PostgreSQL's json functions refuse some
-- of them: `\u0000` (and lone surrogates) "cannot be converted to text". 0010's statement
-- trigger cast every inserted row's manifest to jsonb, so such a manifest of any kind made the
-- INSERT fail (a 5xx for a manifest that verified). Now:
--
-- * bk_manifest_doc(manifest) is the manifest as jsonb, with `\u0000` read as U+FFFD when
--   PostgreSQL refuses the text, and NULL when it still does. Everything in SQL that reads a
--   stored manifest as JSON goes through it; the text in events stays verbatim.
-- * repository_sizes is maintained by a row trigger that runs only for prune manifests
--   (WHEN in the trigger definition: other kinds never reach the function).

CREATE FUNCTION bk_manifest_doc(manifest text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    BEGIN
        RETURN manifest::jsonb;
    EXCEPTION WHEN untranslatable_character OR invalid_text_representation OR invalid_parameter_value
                   OR character_not_in_repertoire THEN
        NULL;
    END;
    BEGIN
        RETURN replace(manifest, '\u0000', '\ufffd')::jsonb;
    EXCEPTION WHEN untranslatable_character OR invalid_text_representation OR invalid_parameter_value
                   OR character_not_in_repertoire THEN
        RETURN NULL;
    END;
END
$$;

DROP TRIGGER events_derive_repository_sizes ON events;
DROP FUNCTION bk_derive_repository_sizes();

-- The latest measurement per (hub, repository) wins; equal times are ordered by event id, so
-- that the result does not depend on the order of arrival (audit recomputes it that way).
CREATE FUNCTION bk_derive_repository_size() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    size_text text := bk_manifest_doc(NEW.manifest) #>> '{prune,remaining_size}';
BEGIN
    IF size_text IS NOT NULL THEN
        INSERT INTO repository_sizes AS r (hub_host, repository_name, size_bytes, size_text, measured_at, event_id)
        VALUES (NEW.host, NEW.repository_name, bk_restic_size_bytes(size_text), size_text, NEW.finished_at, NEW.id)
        ON CONFLICT (hub_host, repository_name) DO UPDATE SET
            size_bytes = excluded.size_bytes, size_text = excluded.size_text,
            measured_at = excluded.measured_at, event_id = excluded.event_id
        WHERE (excluded.measured_at, excluded.event_id) > (r.measured_at, r.event_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_derive_repository_size AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.kind = 'prune' AND NEW.repository_name IS NOT NULL)
    EXECUTE FUNCTION bk_derive_repository_size();

-- What repository_sizes holds when rebuilt from events (bk-reporter audit compares the two).
CREATE VIEW repository_sizes_from_events AS
SELECT DISTINCT ON (host, repository_name)
       host AS hub_host, repository_name, bk_restic_size_bytes(size_text) AS size_bytes, size_text,
       finished_at AS measured_at, id AS event_id
  FROM (SELECT host, repository_name, finished_at, id, bk_manifest_doc(manifest) #>> '{prune,remaining_size}' AS size_text
          FROM events
         WHERE kind = 'prune' AND repository_name IS NOT NULL) pruned
 WHERE size_text IS NOT NULL
 ORDER BY host, repository_name, finished_at DESC, id DESC;

-- Prune manifests stored before 0010 created the table; the triggers have kept it since.
INSERT INTO repository_sizes (hub_host, repository_name, size_bytes, size_text, measured_at, event_id)
SELECT hub_host, repository_name, size_bytes, size_text, measured_at, event_id FROM repository_sizes_from_events
    ON CONFLICT (hub_host, repository_name) DO NOTHING;
