-- Consumer groups of subscriptions (api/src/subscribe/group.rs): a
-- group's members share its events, split into a fixed number of buckets
-- by a hash of a partition key; each bucket is held by one member at a
-- time under a lease, and its acknowledged position is stored here,
-- fenced by the holder's generation.

-- The bucket of a partition key: the first 32 bits of its MD5 (big
-- endian, unsigned) modulo the bucket count. Documented in README.md so
-- that clients in any language can compute it.
CREATE FUNCTION strata.stream_bucket(key text, buckets int) RETURNS int
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (('x' || substr(md5(key), 1, 8))::bit(32)::int8 % buckets)::int;

CREATE TABLE strata.stream_groups (
    name       text        PRIMARY KEY,
    -- SHA-256 of the filter, the key and the bucket count: a member must
    -- join with the same.
    definition bytea       NOT NULL,
    -- The payload path of the partition key; NULL: the user id.
    key_path   text[],
    buckets    int         NOT NULL CHECK (buckets BETWEEN 1 AND 1024),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE strata.stream_group_buckets (
    group_name  text        NOT NULL REFERENCES strata.stream_groups ON DELETE CASCADE,
    bucket      int         NOT NULL,
    -- The member holding it (NULL: free), until lease_until.
    owner       uuid,
    lease_until timestamptz,
    -- Raised by every claim; acknowledgements carry the claim's
    -- generation, so a member that lost the bucket cannot move it.
    generation  bigint      NOT NULL DEFAULT 0,
    -- Everything of this bucket up to this position was acknowledged
    -- (api/src/subscribe/position.rs: seq, and the row key or NULL for
    -- the whole transaction).
    acked_seq   bigint      NOT NULL,
    acked_user  text COLLATE "C",
    acked_at    bigint,
    acked_event uuid,
    acked_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, bucket)
) WITH (fillfactor = 50);  -- leases are renewed every second: room for HOT updates

CREATE TABLE strata.stream_group_members (
    group_name   text        NOT NULL REFERENCES strata.stream_groups ON DELETE CASCADE,
    member       uuid        NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    joined_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, member)
) WITH (fillfactor = 50);

GRANT SELECT, INSERT, UPDATE ON strata.stream_groups TO strata_api;
GRANT SELECT, INSERT, UPDATE ON strata.stream_group_buckets TO strata_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON strata.stream_group_members TO strata_api;
