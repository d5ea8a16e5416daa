-- The hot store: every shipped event, partitioned by the UTC day of
-- occurred_at. The primary key is both the dedup key (re-shipping the same
-- event is a no-op) and the index of one user's history in
-- (occurred_at, event_id) order. It includes user_id so the table can be
-- distributed by user_id (Citus) and must include occurred_at, the
-- partition key.
CREATE SCHEMA IF NOT EXISTS strata;

CREATE TABLE strata.activity (
    event_id    uuid        NOT NULL,
    -- Byte order ("C"): ids are opaque, the archive sorts and splits files
    -- by it, and comparisons are cheaper than under a linguistic collation.
    user_id     text COLLATE "C" NOT NULL,
    kind        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    source      text        NOT NULL,
    payload     jsonb       NOT NULL,
    -- When the relay's batch transaction started; for lag forensics.
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, occurred_at, event_id)
) PARTITION BY RANGE (occurred_at);

-- Outbox rows that break the event rules (inserted by hand, bypassing the
-- SDK). Kept verbatim with the reason; never silently dropped.
CREATE TABLE strata.dead_letters (
    source_name      text        NOT NULL,
    outbox_id        bigint      NOT NULL,
    event_id         uuid        NOT NULL,
    user_id          text        NOT NULL,
    kind             text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    source           text        NOT NULL,
    payload          text        NOT NULL,
    enqueued_at      timestamptz NOT NULL,
    reason_code      text        NOT NULL,
    reason           text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_name, outbox_id)
);

-- The elected reconciler of each source, as last written by the leader.
CREATE TABLE strata.reconciler_status (
    source_name   text        PRIMARY KEY,
    epoch         bigint      NOT NULL,
    holder        text        NOT NULL,
    backend_pid   integer     NOT NULL,
    elected_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    last_pass_at  timestamptz,
    resent_total  bigint      NOT NULL DEFAULT 0
);

-- Every term ever won, for audits of the election.
CREATE TABLE strata.reconciler_terms (
    source_name text        NOT NULL,
    epoch       bigint      NOT NULL,
    holder      text        NOT NULL,
    backend_pid integer     NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_name, epoch)
);

-- Name of the partition holding `day`.
CREATE FUNCTION strata.activity_partition_name(day date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'activity_' || to_char(day, 'YYYYMMDD') $$;

-- Creates the partition of `day` (UTC) if it does not exist. Concurrent
-- callers serialise on an advisory lock, and a creation that still races
-- (the lock does not refresh this session's catalog cache) is caught, so
-- no caller fails. Returns true when it created the partition.
CREATE FUNCTION strata.ensure_day_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := strata.activity_partition_name(day);
BEGIN
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
    RETURN true;
END $$;

-- Read-only role for ad-hoc SQL inspection. Creating it needs CREATEROLE;
-- without it the migration still succeeds and says so.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'strata_reader') THEN
        BEGIN
            CREATE ROLE strata_reader NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE WARNING 'strata: cannot create role strata_reader (needs CREATEROLE); create it and grant SELECT on schema strata by hand';
            -- Roles are cluster-wide: a migration of another database may
            -- have created it a moment ago.
            WHEN duplicate_object OR unique_violation THEN
                NULL;
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'strata_reader') THEN
        GRANT USAGE ON SCHEMA strata TO strata_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA strata TO strata_reader;
        ALTER DEFAULT PRIVILEGES IN SCHEMA strata GRANT SELECT ON TABLES TO strata_reader;
        IF NOT EXISTS (
            SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
            WHERE r.rolname = 'strata_reader' AND s.setdatabase = 0
              AND 'default_transaction_read_only=on' = ANY (s.setconfig)) THEN
            BEGIN
                ALTER ROLE strata_reader SET default_transaction_read_only = on;
            EXCEPTION WHEN unique_violation OR internal_error THEN
                -- The migration of another database set it at the same
                -- moment (duplicate key, or "tuple concurrently updated").
                NULL;
            END;
        END IF;
    END IF;
END $$;
