-- Who called, by network address, and how many calls a row stands for: a
-- refused call is audited on its own while its peer's audit budget lasts;
-- beyond it, one summary row per peer and interval stands for them all
-- (calls > 1, decision 'denied', detail listing methods and codes).
ALTER TABLE strata.api_audit
    ADD COLUMN peer inet,
    -- No CHECK: validating one would scan the (never pruned) table under
    -- an exclusive lock; a constant default is a catalog-only change.
    ADD COLUMN calls bigint NOT NULL DEFAULT 1;
