-- The history API: its role, its audit trail and its export jobs.

-- The role every API connection switches to. Roles are cluster-wide, so a
-- second database (or a concurrent migration) finds it already there.
DO $$
BEGIN
    CREATE ROLE strata_api NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- One row per API call, allowed or denied. Append-only: the API role may
-- only insert (and read, for its own tests and tools); a trigger refuses
-- UPDATE, DELETE and TRUNCATE for everybody, owners included, so removing
-- audit rows takes a visible schema change.
CREATE TABLE strata.api_audit (
    audit_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id   text NOT NULL,
    principal    text NOT NULL,
    target_user  text NOT NULL,
    method       text NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('allowed', 'denied', 'failed')),
    status_code  text NOT NULL,
    detail       text NOT NULL DEFAULT ''
);
CREATE INDEX api_audit_at ON strata.api_audit (at);
CREATE INDEX api_audit_target ON strata.api_audit (target_user, at);

CREATE FUNCTION strata.api_audit_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'strata.api_audit is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER api_audit_append_only
    BEFORE UPDATE OR DELETE ON strata.api_audit
    FOR EACH ROW EXECUTE FUNCTION strata.api_audit_is_append_only();
CREATE TRIGGER api_audit_no_truncate
    BEFORE TRUNCATE ON strata.api_audit
    FOR EACH STATEMENT EXECUTE FUNCTION strata.api_audit_is_append_only();

-- Background exports (StartExport/GetExport). A job is claimed by one API
-- process at a time through `lease_until`; a crashed owner's job is picked
-- up again once the lease lapses, and restarted from the beginning (the
-- file is written under the job's key, so a rerun replaces it).
CREATE TABLE strata.export_jobs (
    export_id    uuid PRIMARY KEY,
    principal    text NOT NULL,
    user_id      text NOT NULL,
    range_from   timestamptz NOT NULL,
    range_to     timestamptz NOT NULL,
    kinds        text[] NOT NULL,
    format       text NOT NULL CHECK (format IN ('jsonl', 'csv')),
    state        text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    object_key   text NOT NULL,
    events       bigint NOT NULL DEFAULT 0,
    bytes        bigint NOT NULL DEFAULT 0,
    error        text NOT NULL DEFAULT '',
    attempts     int NOT NULL DEFAULT 0,
    lease_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX export_jobs_open ON strata.export_jobs (created_at)
    WHERE state IN ('pending', 'running');

GRANT USAGE ON SCHEMA strata TO strata_api;
GRANT SELECT ON strata.activity, strata.late_activity, strata.archive_days,
    strata.archive_files TO strata_api;
GRANT SELECT, INSERT ON strata.api_audit TO strata_api;
GRANT SELECT, INSERT, UPDATE ON strata.export_jobs TO strata_api;
