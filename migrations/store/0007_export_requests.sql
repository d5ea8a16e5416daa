-- Export jobs as the API contract describes them: idempotent StartExport
-- (a client's request_id, AIP-155), listing (newest first, per principal or,
-- for support agents, per user) and cancellation.

ALTER TABLE strata.export_jobs ADD COLUMN request_id uuid;

-- One job per (principal, request_id): a retried StartExport finds the job
-- its first attempt created, also when two retries race (the insert of the
-- second fails on this index and it reads the first's row instead).
CREATE UNIQUE INDEX export_jobs_request ON strata.export_jobs (principal, request_id)
    WHERE request_id IS NOT NULL;

ALTER TABLE strata.export_jobs DROP CONSTRAINT export_jobs_state_check;
ALTER TABLE strata.export_jobs ADD CONSTRAINT export_jobs_state_check
    CHECK (state IN ('pending', 'running', 'done', 'failed', 'expired', 'cancelled'));

-- ListExports pages by (created_at, export_id) descending: an index scan
-- from the cursor, whatever the table's size or statistics.
CREATE INDEX export_jobs_by_principal
    ON strata.export_jobs (principal, created_at DESC, export_id DESC);
CREATE INDEX export_jobs_by_user
    ON strata.export_jobs (user_id, created_at DESC, export_id DESC);
