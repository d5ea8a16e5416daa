-- The outbox is a queue: rows arrive and leave within milliseconds, so the
-- default autovacuum thresholds (a fraction of a table that is usually
-- almost empty) leave its statistics stale for long stretches, and after a
-- crash restart they are reset. Vacuum and analyze it after a fixed number
-- of changes instead. The relay's claim does not depend on these
-- statistics (it runs with enable_seqscan = off), but dead tuples and any
-- other query on the table do.
ALTER TABLE strata_outbox.events SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000
);
