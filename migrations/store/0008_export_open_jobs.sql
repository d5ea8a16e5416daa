-- Export job attempts with files of their own, and the indexes the
-- per-principal count and the file sweep need.

-- The attempt whose file a done job serves: each attempt uploads to a key
-- of its own (<id>.<ext>, then <id>.attempt-N.<ext>). NULL for jobs that
-- finished before: their file is at object_key whatever their attempts.
ALTER TABLE strata.export_jobs ADD COLUMN file_attempt int;

-- A principal's open export jobs are counted under its lock on every
-- StartExport and streamed export. Job rows are kept (request ids are
-- remembered), so counting through the per-principal listing index would
-- read every job the principal ever had; this index holds only the open
-- ones: pending, running, and cancelled while a worker may still hold them
-- (the worker, or the sweep once the lease lapsed, clears lease_until).
UPDATE strata.export_jobs SET lease_until = NULL
 WHERE state = 'cancelled' AND file_deleted AND lease_until IS NOT NULL;
CREATE INDEX export_jobs_open_by_principal ON strata.export_jobs (principal)
    WHERE state IN ('pending', 'running')
       OR (state = 'cancelled' AND lease_until IS NOT NULL);

-- The sweep deletes what cancelled and failed jobs' attempts may have
-- uploaded (a worker that crashed between its upload and its finish).
DROP INDEX strata.export_jobs_cancelled;
CREATE INDEX export_jobs_unswept ON strata.export_jobs (finished_at)
    WHERE state IN ('cancelled', 'failed') AND NOT file_deleted;
