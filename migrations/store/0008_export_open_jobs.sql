-- A principal's open export jobs are counted under its lock on every
-- StartExport and streamed export. Job rows are kept (request ids are
-- remembered), so counting through the per-principal listing index would
-- read every job the principal ever had; this index holds only the open
-- ones: pending, running, and cancelled while a worker may still hold them
-- (the worker, or the sweep once the lease lapsed, clears lease_until).
CREATE INDEX export_jobs_open_by_principal ON strata.export_jobs (principal)
    WHERE state IN ('pending', 'running')
       OR (state = 'cancelled' AND lease_until IS NOT NULL);
