-- Export jobs as the API contract describes them: idempotent StartExport
-- (a client's request_id, AIP-155), listing (newest first, per principal or,
-- for support agents, per user) and cancellation.

ALTER TABLE strata.export_jobs ADD COLUMN request_id uuid;

-- One job per (principal, request_id): a retried StartExport finds the job
-- its first attempt created. Lookup and insert run under a per-principal
-- advisory lock, so retries that race wait for each other; the index is
-- the backstop that makes a second row impossible.
CREATE UNIQUE INDEX export_jobs_request ON strata.export_jobs (principal, request_id)
    WHERE request_id IS NOT NULL;

ALTER TABLE strata.export_jobs DROP CONSTRAINT export_jobs_state_check;
ALTER TABLE strata.export_jobs ADD CONSTRAINT export_jobs_state_check
    CHECK (state IN ('pending', 'running', 'done', 'failed', 'expired', 'cancelled'));

-- A cancelled job's file (if its worker had uploaded one) is deleted by
-- the sweep once no worker holds the job; this records that it was.
ALTER TABLE strata.export_jobs ADD COLUMN file_deleted boolean NOT NULL DEFAULT false;
CREATE INDEX export_jobs_cancelled ON strata.export_jobs (finished_at)
    WHERE state = 'cancelled' AND NOT file_deleted;

-- ListExports pages by (created_at, export_id) descending: an ordered index
-- scan from the cursor, whatever the table's size or statistics. A
-- principal's own jobs of one user (tokens without the read-any scope see
-- only those), all of a principal's jobs, and all jobs of a user (support
-- agents).
CREATE INDEX export_jobs_by_principal_user
    ON strata.export_jobs (principal, user_id, created_at DESC, export_id DESC);
CREATE INDEX export_jobs_by_principal
    ON strata.export_jobs (principal, created_at DESC, export_id DESC);
CREATE INDEX export_jobs_by_user
    ON strata.export_jobs (user_id, created_at DESC, export_id DESC);
