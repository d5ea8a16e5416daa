-- The outbox: the public producer contract. A service in any language
-- produces an event by inserting one row here inside its own business
-- transaction; the row exists if and only if that transaction commits.
CREATE SCHEMA IF NOT EXISTS strata_outbox;

CREATE TABLE strata_outbox.events (
    -- Relay bookkeeping only: claim order and release key. Never used as a
    -- cursor (ids commit out of order).
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Idempotency key of the event (UUIDv7 from the SDK).
    event_id    uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id     text        NOT NULL,
    kind        text        NOT NULL,
    -- Decides the event's day and its place in the user's history.
    occurred_at timestamptz NOT NULL DEFAULT now(),
    -- Producing service.
    source      text        NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Start of the producing transaction; ages stuck rows.
    enqueued_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE strata_outbox.events IS
    'Strata outbox: insert activity events here in your business transaction; strata relays ship and delete them';
