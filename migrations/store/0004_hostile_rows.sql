-- Dead letters keep what the relay could take without copying a hostile
-- value whole: an oversized payload (or a megabyte of user_id) is kept as a
-- prefix with its real size. Only intact rows can be re-driven.
ALTER TABLE strata.dead_letters
    -- octet_length(payload::text) of the outbox row (NULL for rows
    -- dead-lettered before this column existed).
    ADD COLUMN payload_bytes bigint,
    -- False when payload, user_id, kind or source hold a prefix or a
    -- lossy UTF-8 copy of the stored value.
    ADD COLUMN intact boolean NOT NULL DEFAULT true;

CREATE INDEX dead_letters_reason ON strata.dead_letters (reason_code, dead_lettered_at);

-- Outbox ids are not unique over time (an outbox recreated or restored, a
-- producer inserting with OVERRIDING SYSTEM VALUE): the event id joins the
-- key, so a new dead letter is never dropped as a "duplicate" of an old
-- one. The same outbox row dead-lettered twice (a batch re-shipped after a
-- crash) still conflicts and is kept once.
ALTER TABLE strata.dead_letters DROP CONSTRAINT dead_letters_pkey,
    ADD PRIMARY KEY (source_name, outbox_id, event_id);

-- Day partition names, one per day: years 1..9999 keep their
-- activity_YYYYMMDD names; a BC day gets its own prefix (to_char prints
-- 0001-01-01 BC and 0001-01-01 alike), later years print five digits.
CREATE OR REPLACE FUNCTION strata.activity_partition_name(day date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN day < DATE '0001-01-01'
                THEN 'activity_bc' || to_char(day, 'YYYYMMDD')
                ELSE 'activity_' || to_char(day, 'YYYYMMDD') END
$$;

-- Partitions exist only for days a partition can bound: finite, and within
-- the years the relay's window can admit (1..9999).
CREATE OR REPLACE FUNCTION strata.ensure_day_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    IF day IS NULL OR NOT isfinite(day) OR day < DATE '0001-01-01' OR day > DATE '9999-12-31' THEN
        RAISE EXCEPTION 'strata: no day partition for %: days must lie in years 1 to 9999', day
            USING ERRCODE = 'datetime_field_overflow';
    END IF;
    part := strata.activity_partition_name(day);
    IF EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'strata' AND c.relname = part) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('strata.partition.' || part, 0));
    BEGIN
        EXECUTE format(
            'CREATE TABLE strata.%I PARTITION OF strata.activity FOR VALUES FROM (%L) TO (%L)',
            part,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;
    END;
    IF EXISTS (SELECT FROM strata.archive_days a WHERE a.day = ensure_day_partition.day) THEN
        PERFORM strata.seal_day_partition(day);
    END IF;
    RETURN true;
END $$;
