-- The archive catalog. The object store holds files; these tables say which
-- of them are the archive. A day's files become data in one transaction
-- here (the commit point), fenced by the archiver's lease epoch.

-- The single archiver lease. A leader renews it well within lease_ttl; a
-- new leader takes an expired lease by bumping the epoch, and every commit
-- re-checks holder and epoch under a row lock, so a leader that was paused
-- past its lease can no longer commit.
CREATE TABLE strata.archiver_lease (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    holder      text        NOT NULL,
    epoch       bigint      NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE TABLE strata.archive_days (
    day              date        PRIMARY KEY,
    -- 'sealed': late-event capture is on, the export may be running;
    -- 'committed': the files in archive_files are the day's archive.
    state            text        NOT NULL CHECK (state IN ('sealed', 'committed')),
    sealed_at        timestamptz NOT NULL DEFAULT now(),
    -- The export's snapshot: captured rows invisible to it are late.
    export_snapshot  pg_snapshot,
    committed_at     timestamptz,
    committed_epoch  bigint,
    rows             bigint      NOT NULL DEFAULT 0,
    bytes            bigint      NOT NULL DEFAULT 0,
    files            integer     NOT NULL DEFAULT 0,
    -- Bumped by every commit (the day, then each late file); the manifest
    -- object is rewritten until manifest_version catches up.
    version          integer     NOT NULL DEFAULT 0,
    manifest_version integer     NOT NULL DEFAULT 0,
    -- Set when the hot partition was dropped (after hot_retention_days).
    partition_dropped_at timestamptz
);

CREATE TABLE strata.archive_files (
    day            date        NOT NULL REFERENCES strata.archive_days (day),
    object_key     text        NOT NULL,
    -- 'day': the export; 'late': events that reached a sealed day later.
    origin         text        NOT NULL CHECK (origin IN ('day', 'late')),
    seq            integer     NOT NULL,
    rows           bigint      NOT NULL,
    bytes          bigint      NOT NULL,
    min_user_id    text COLLATE "C" NOT NULL,
    max_user_id    text COLLATE "C" NOT NULL,
    -- SHA-256 of the object's bytes, and of its rows as read from the hot
    -- store (see strata_archiver::layout::ContentHasher).
    sha256         text        NOT NULL,
    content_sha256 text        NOT NULL,
    epoch          bigint      NOT NULL,
    committed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, object_key),
    UNIQUE (day, seq)
);

-- Copies of rows inserted into a sealed day's partition, with the inserting
-- transaction, so the archiver can tell which of them its export missed
-- (not visible in export_snapshot) and archive those as late files. The
-- copy also outlives a dropped partition.
CREATE TABLE strata.late_activity (
    late_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    day         date        NOT NULL,
    event_id    uuid        NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    kind        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    source      text        NOT NULL,
    payload     jsonb       NOT NULL,
    ingested_at timestamptz NOT NULL,
    xid         xid8        NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX late_activity_day ON strata.late_activity (day);

CREATE FUNCTION strata.capture_late_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO strata.late_activity
        (day, event_id, user_id, kind, occurred_at, source, payload, ingested_at)
    VALUES ((NEW.occurred_at AT TIME ZONE 'UTC')::date, NEW.event_id, NEW.user_id,
            NEW.kind, NEW.occurred_at, NEW.source, NEW.payload, NEW.ingested_at);
    RETURN NULL;
END $$;

-- Turns on late-event capture for `day`'s partition, if it exists. CREATE
-- TRIGGER waits for transactions writing the partition, so every row
-- inserted afterwards is captured. Only sealed days pay for the trigger.
-- It takes ensure_day_partition's lock first: a partition being created
-- concurrently is either seen here or sees the caller's archive_days row.
CREATE FUNCTION strata.seal_day_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := strata.activity_partition_name(day);
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('strata.partition.' || part, 0));
    IF NOT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'strata' AND c.relname = part) THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER capture_late AFTER INSERT ON strata.%I '
        'FOR EACH ROW EXECUTE FUNCTION strata.capture_late_event()', part);
    RETURN true;
END $$;

-- As in 0001, and a partition re-created for a day already sealed (a late
-- event after the partition was dropped) gets the capture trigger before
-- any row can reach it.
CREATE OR REPLACE FUNCTION strata.ensure_day_partition(day date) RETURNS boolean
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
    IF EXISTS (SELECT FROM strata.archive_days a WHERE a.day = ensure_day_partition.day) THEN
        PERFORM strata.seal_day_partition(day);
    END IF;
    RETURN true;
END $$;
