-- Export files are deleted after api.export_retention; their job rows stay,
-- marked 'expired', so GetExport can say what happened.
ALTER TABLE strata.export_jobs DROP CONSTRAINT export_jobs_state_check;
ALTER TABLE strata.export_jobs ADD CONSTRAINT export_jobs_state_check
    CHECK (state IN ('pending', 'running', 'done', 'failed', 'expired'));
CREATE INDEX export_jobs_done ON strata.export_jobs (finished_at) WHERE state = 'done';
