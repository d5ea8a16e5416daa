-- Live subscriptions: every stored event gets a position that is gap-free
-- and resumable (see ARCHITECTURE.md, "The subscription position").
--
-- Rows become visible in the order relay transactions COMMIT, not in the
-- order they were written or occurred. So each relay transaction that
-- stored events numbers itself as its last statement: it takes the next
-- value of stream_head.head (the UPDATE holds the row's lock until the
-- transaction ends) and writes (seq, its xid) to stream_log. A transaction
-- waiting for that lock gets its number only after the holder committed,
-- so the order of numbers is the order of commits, which is the order of
-- visibility, on the primary and on a physical replica replaying its WAL:
-- the log a snapshot sees is always a prefix, with no holes to skip.
-- An event's position is (seq of its transaction, its primary key).

-- The writing transaction of each row. Rows stored before this migration
-- have none and are not part of the stream (added without a default and
-- the default set after, so existing partitions are not rewritten).
ALTER TABLE strata.activity ADD COLUMN stream_txid xid8;
ALTER TABLE strata.activity ALTER COLUMN stream_txid SET DEFAULT pg_current_xact_id();
CREATE INDEX activity_stream_txid ON strata.activity (stream_txid)
    WHERE stream_txid IS NOT NULL;

-- The last number handed out. One row: on one node every relay batch
-- holds events of users from everywhere, so per-bucket counters would be
-- taken by every transaction alike; the lock is held only from the
-- append to the commit.
CREATE TABLE strata.stream_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    head     bigint  NOT NULL
);
INSERT INTO strata.stream_head (only_row, head) VALUES (true, 0);

-- One row per relay transaction that stored events, with how many and the
-- range of their occurred_at: readers size their reads by the first and
-- prune partitions with the second.
CREATE TABLE strata.stream_log (
    seq          bigint      PRIMARY KEY,
    txid         xid8        NOT NULL UNIQUE,
    events       int         NOT NULL,
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    -- Taken after the head's lock, so it grows with seq (but for clock
    -- steps): subscriptions starting "at a time" search it.
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX stream_log_committed_at ON strata.stream_log (committed_at);

-- Positions at or below `floor` can no longer be read: the archiver's
-- retention dropped a partition holding rows of those transactions (and
-- trimmed the log up to it). Its own row, so that moving it never waits
-- for the relays' lock on the head.
CREATE TABLE strata.stream_floor (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    floor    bigint  NOT NULL
);
INSERT INTO strata.stream_floor (only_row, floor) VALUES (true, 0);

GRANT SELECT ON strata.stream_head, strata.stream_log, strata.stream_floor TO strata_api;
