-- The SQL producer API: strata_outbox.enqueue(...) and enqueue_many(...),
-- for services that produce events from any language with plain SQL.
--
-- They apply the SDK's rules (strata_core::event: NewEvent::prepare and
-- validate_source) inside the caller's transaction, so a bad event fails
-- the business transaction instead of becoming a dead letter later. Each
-- broken rule raises its own SQLSTATE (class SV, implementation-defined
-- and unused by Postgres) with a MESSAGE that starts with the SDK's code
-- (ValidationError::code), e.g.
--   SV003  invalid_kind: kind "Bad Kind" is not a short identifier ([a-z0-9_.-], 1 to 64 bytes)
--
--   SV001 empty_user_id             SV005 payload_too_large
--   SV002 user_id_too_long          SV006 invalid_source
--   SV003 invalid_kind              SV007 occurred_at_out_of_window
--   SV004 payload_not_object        SV008 invalid_batch (enqueue_many only)
--
-- One more error is no broken rule but a wrong call: a local time (a
-- timestamp without time zone) for enqueue's occurred_at raises 42804
-- datatype_mismatch, see the overload after enqueue.
--
-- Rules are checked in the SDK's order: source, then per event user_id,
-- kind, payload type, payload size, occurred_at. Limits (the SDK's
-- EventLimits defaults) can be changed per database or role, to keep them
-- equal to the relay's:
--   strata.max_payload_bytes  bytes of payload::text   (default 65536)
--   strata.accept_past        interval, at most 36600 days (default 400 days)
--   strata.accept_future      interval, at most 36600 days (default 1 day)
-- and the producing service's name may come from the setting strata.source
-- (e.g. ALTER ROLE payments_app SET strata.source = 'payments') when the
-- source argument is NULL or omitted.
--
-- The functions are SECURITY DEFINER (owner: whoever runs the migration)
-- with a fixed search_path and qualified names: the role strata_producer
-- needs only EXECUTE on them and USAGE on the schema, no table privilege.
-- They never NOTIFY: a notifying commit serialises all producers on
-- Postgres's notify lock (see README); ring after COMMIT or rely on the
-- relays' poll.

-- UUIDv7 (RFC 9562): 48-bit Unix milliseconds from clock_timestamp(),
-- version 7, variant 10, 74 random bits (those of a gen_random_uuid()).
-- Time-ordered across milliseconds; not monotonic within one. PL/pgSQL,
-- not SQL: its plan is cached per session (a SQL function called from a
-- client's statement is planned again on every call). Every name and
-- operator is qualified, so no search_path can change what it does; it
-- runs with its caller's rights (enqueue's event_id default calls it).
CREATE FUNCTION strata_outbox.uuidv7() RETURNS uuid
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
AS $$
DECLARE
    b pg_catalog.bytea := pg_catalog.overlay(
        pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
        pg_catalog.substr(pg_catalog.int8send(pg_catalog.floor(
            pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())
            OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8), 3),
        1, 6);
BEGIN
    -- Version 7 in the high nibble of byte 6; the variant bits of byte 8
    -- are gen_random_uuid()'s, already 10.
    b := pg_catalog.set_byte(b, 6,
        (pg_catalog.get_byte(b, 6) OPERATOR(pg_catalog.&) 15) OPERATOR(pg_catalog.|) 112);
    RETURN pg_catalog.encode(b, 'hex')::pg_catalog.uuid;
END
$$;

COMMENT ON FUNCTION strata_outbox.uuidv7() IS
    'A UUIDv7 (48-bit Unix ms timestamp, version 7, random rest): the default event_id of strata_outbox.enqueue';

-- Internal helpers of enqueue and enqueue_many (granted to no one). They
-- have no SET clause of their own (each one would cost a configuration
-- change per call): they run under their callers' search_path, which is
-- pg_catalog, pg_temp.

-- The limits in force, from the strata.* settings or the SDK's defaults.
-- Callers can change the settings for their own session: they can only
-- loosen the check into dead letters later, never bypass the relay's.
CREATE FUNCTION strata_outbox._enqueue_limits(
    OUT max_payload_bytes bigint,
    OUT earliest timestamptz,
    OUT latest timestamptz)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    -- core::event::MAX_ACCEPT_WINDOW: 100 * 366 days, in seconds.
    max_window CONSTANT double precision := 3162240000;
    setting text;
    past double precision := 400 * 86400;
    future double precision := 86400;
    now_ CONSTANT timestamptz := pg_catalog.clock_timestamp();
BEGIN
    max_payload_bytes := 65536;
    setting := pg_catalog.current_setting('strata.max_payload_bytes', true);
    IF setting IS NOT NULL AND setting <> '' THEN
        IF setting !~ '^\s*[0-9]{1,18}\s*$' THEN
            RAISE EXCEPTION 'strata.max_payload_bytes = "%" is not a byte count', setting
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        max_payload_bytes := setting::bigint;
    END IF;
    setting := pg_catalog.current_setting('strata.accept_past', true);
    IF setting IS NOT NULL AND setting <> '' THEN
        past := pg_catalog.date_part('epoch', setting::interval);
    END IF;
    setting := pg_catalog.current_setting('strata.accept_future', true);
    IF setting IS NOT NULL AND setting <> '' THEN
        future := pg_catalog.date_part('epoch', setting::interval);
    END IF;
    IF past < 0 OR future < 0 THEN
        RAISE EXCEPTION 'strata.accept_past and strata.accept_future must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Whole seconds only: the SDK's window is absolute time (no DST days).
    earliest := now_ - pg_catalog.make_interval(secs => LEAST(past, max_window));
    latest := now_ + pg_catalog.make_interval(secs => LEAST(future, max_window));
END
$$;

-- The producing service: the argument, else the setting strata.source;
-- validated like core::event::validate_source (1 to 64 bytes).
CREATE FUNCTION strata_outbox._enqueue_source(source text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    name text := source;
BEGIN
    IF name IS NULL THEN
        name := NULLIF(pg_catalog.current_setting('strata.source', true), '');
        IF name IS NULL THEN
            RAISE EXCEPTION 'invalid_source: no source given: pass source => ''<service>'' or set strata.source'
                USING ERRCODE = 'SV006',
                      HINT = 'Name the producing service once per role: ALTER ROLE <role> SET strata.source = ''payments''.';
        END IF;
    END IF;
    IF pg_catalog.octet_length(name) NOT BETWEEN 1 AND 64 THEN
        RAISE EXCEPTION 'invalid_source: source % must be 1 to 64 bytes',
                pg_catalog.to_jsonb(pg_catalog."left"(name, 80))::text
            USING ERRCODE = 'SV006';
    END IF;
    RETURN name;
END
$$;

-- One event's rules, in NewEvent::prepare's order. prefix is '' or
-- 'events[i]: ' (the position in a batch, 0-based).
CREATE FUNCTION strata_outbox._enqueue_check(
    prefix text,
    user_id text,
    kind text,
    payload jsonb,
    occurred_at timestamptz,
    max_payload_bytes bigint,
    earliest timestamptz,
    latest timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    len bigint;
    shown text;
BEGIN
    IF user_id IS NULL OR user_id = '' THEN
        RAISE EXCEPTION 'empty_user_id: %user_id is %', prefix,
                CASE WHEN user_id IS NULL THEN 'null' ELSE 'empty' END
            USING ERRCODE = 'SV001';
    END IF;
    len := pg_catalog.octet_length(user_id);
    IF len > 256 THEN
        RAISE EXCEPTION 'user_id_too_long: %user_id is % bytes, more than the 256-byte limit', prefix, len
            USING ERRCODE = 'SV002';
    END IF;
    -- Bytes, as the SDK counts them: the class is ASCII-only, so a match
    -- has as many bytes as characters; COLLATE "C" keeps ranges bytewise.
    IF kind IS NULL
       OR NOT (kind COLLATE pg_catalog."C" ~ '^[a-z0-9_.-]{1,64}$') THEN
        RAISE EXCEPTION 'invalid_kind: %kind % is not a short identifier ([a-z0-9_.-], 1 to 64 bytes)', prefix,
                COALESCE(pg_catalog.to_jsonb(pg_catalog."left"(kind, 80))::text, 'null')
            USING ERRCODE = 'SV003';
    END IF;
    IF payload IS NULL THEN
        RAISE EXCEPTION 'payload_not_object: %payload must be a JSON object, got SQL NULL', prefix
            USING ERRCODE = 'SV004',
                  HINT = 'Omit payload, or pass ''{}'', for an event without details.';
    END IF;
    IF pg_catalog.jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'payload_not_object: %payload must be a JSON object, got %', prefix,
                pg_catalog.jsonb_typeof(payload)
            USING ERRCODE = 'SV004';
    END IF;
    -- Measured as the relay measures it: the text Postgres prints.
    len := pg_catalog.octet_length(payload::text);
    IF len > max_payload_bytes THEN
        RAISE EXCEPTION 'payload_too_large: %payload is % bytes, more than the %-byte limit', prefix, len, max_payload_bytes
            USING ERRCODE = 'SV005',
                  DETAIL = 'Measured as octet_length(payload::text); the limit is the setting strata.max_payload_bytes (default 65536), keep it equal to relay.max_payload_bytes.';
    END IF;
    IF occurred_at < earliest OR occurred_at > latest THEN
        IF pg_catalog.isfinite(occurred_at) THEN
            shown := pg_catalog.to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
            IF pg_catalog.date_part('year', occurred_at AT TIME ZONE 'UTC') < 1 THEN
                shown := shown || ' BC';
            END IF;
        ELSE
            shown := occurred_at::text;
        END IF;
        RAISE EXCEPTION 'occurred_at_out_of_window: %occurred_at % is outside the accepted window % .. %', prefix,
                shown,
                pg_catalog.to_char(earliest AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                pg_catalog.to_char(latest AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            USING ERRCODE = 'SV007',
                  DETAIL = 'The window is strata.accept_past (default 400 days) back and strata.accept_future (default 1 day) ahead of now; keep them equal to relay.accept_past and relay.accept_future.';
    END IF;
END
$$;

CREATE FUNCTION strata_outbox.enqueue(
    user_id text,
    kind text,
    payload jsonb DEFAULT '{}',
    occurred_at timestamptz DEFAULT now(),
    event_id uuid DEFAULT strata_outbox.uuidv7(),
    source text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim record;
    src text;
    id uuid := COALESCE(enqueue.event_id, strata_outbox.uuidv7());
    at_ timestamptz := COALESCE(enqueue.occurred_at, pg_catalog.now());
BEGIN
    src := strata_outbox._enqueue_source(enqueue.source);
    SELECT * INTO lim FROM strata_outbox._enqueue_limits();
    PERFORM strata_outbox._enqueue_check('', enqueue.user_id, enqueue.kind, enqueue.payload, at_,
                                         lim.max_payload_bytes, lim.earliest, lim.latest);
    INSERT INTO strata_outbox.events (event_id, user_id, kind, occurred_at, source, payload)
    VALUES (id, enqueue.user_id, enqueue.kind, at_, src, enqueue.payload);
    RETURN id;
END
$$;

COMMENT ON FUNCTION strata_outbox.enqueue(text, text, jsonb, timestamptz, uuid, text) IS
    'Enqueue one event in the caller''s transaction, validated as the Strata SDK does (SQLSTATE SV001..SV007 on a broken rule); returns its event_id. NULL occurred_at = now(), NULL event_id = a new UUIDv7, NULL source = the setting strata.source';

-- A local time for occurred_at: refused. Without this overload Postgres
-- converts a timestamp (without time zone) implicitly, in the session's
-- TimeZone, and the event silently moves by that zone's offset (psycopg
-- sends a naive datetime as timestamp, JDBC a LocalDateTime); the SDK
-- (DateTime<Utc>) and enqueue_many (an offset required) take no local
-- time either. An argument of type timestamp matches this function
-- exactly and the one above only through a cast, so Postgres picks this
-- one, and only then: a timestamptz or an untyped literal or parameter
-- ('2026-11-20T10:00:00Z', NULL; timestamptz is the preferred type of the
-- category) resolve to the function above, and a call without occurred_at
-- cannot reach this one (its occurred_at has no default, so no call is
-- ambiguous). Refused even when NULL: the type is the mistake.
-- One shape escapes it: occurred_at passed by name with payload left out
-- (enqueue(u, k, occurred_at => ts)) matches only the function above. An
-- overload for it would need occurred_at in third place (or a default),
-- which makes every call with an untyped third argument ambiguous. Nor
-- can a literal without an offset, or a date (its midnight), be told
-- apart: both reach the function above read in the session TimeZone.
-- Not SECURITY DEFINER (it reads nothing) and no SET clause: every name
-- is qualified.
CREATE FUNCTION strata_outbox.enqueue(
    user_id text,
    kind text,
    payload jsonb,
    occurred_at timestamp,
    event_id uuid DEFAULT NULL,
    source text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RAISE EXCEPTION 'strata_outbox.enqueue: occurred_at is a timestamp without time zone (a local time); pass a timestamptz'
        USING ERRCODE = 'datatype_mismatch',
              DETAIL = pg_catalog.format('Postgres would read it in the session TimeZone (%s) and the event would silently move by its offset.',
                                         pg_catalog.current_setting('TimeZone')),
              HINT = 'Bind an aware time (Python: a datetime with tzinfo; Java: OffsetDateTime; Go: time.Time), write an offset in a literal (''2026-11-20T10:00:00Z''), or say which zone you mean: occurred_at => ts AT TIME ZONE ''UTC''.';
END
$$;

COMMENT ON FUNCTION strata_outbox.enqueue(text, text, jsonb, timestamp, uuid, text) IS
    'Refuses a timestamp without time zone for occurred_at (SQLSTATE 42804) instead of converting it in the session TimeZone: pass a timestamptz';

-- events: a JSON array of objects {"user_id", "kind", "payload"?,
-- "occurred_at"?, "event_id"?}; a missing or null occurred_at / event_id
-- gets now() / a UUIDv7, a missing payload {}. Times are RFC 3339 strings
-- with an offset and at most 9 fraction digits, truncated to microseconds
-- as the SDK truncates (PreparedEvent::occurred_at; Postgres's input would
-- round, and a retry through the SDK would then not find the same
-- idempotency key). Every event is checked before any is inserted; the
-- first broken one is named by its 0-based index. Returns the event ids
-- in input order.
CREATE FUNCTION strata_outbox.enqueue_many(
    events jsonb,
    source text DEFAULT NULL) RETURNS uuid[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim record;
    src text;
    ev jsonb;
    i integer := -1;
    field text;
    bad text;
    t text;
    ids uuid[] := '{}';
    users text[] := '{}';
    kinds text[] := '{}';
    times timestamptz[] := '{}';
    payloads jsonb[] := '{}';
    v_id uuid;
    v_user text;
    v_kind text;
    v_time timestamptz;
    v_payload jsonb;
BEGIN
    src := strata_outbox._enqueue_source(enqueue_many.source);
    IF events IS NULL OR pg_catalog.jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION 'invalid_batch: events must be a JSON array of event objects, got %',
                COALESCE(pg_catalog.jsonb_typeof(events), 'SQL NULL')
            USING ERRCODE = 'SV008';
    END IF;
    IF pg_catalog.jsonb_array_length(events) = 0 THEN
        RAISE EXCEPTION 'invalid_batch: no events to enqueue' USING ERRCODE = 'SV008';
    END IF;
    SELECT * INTO lim FROM strata_outbox._enqueue_limits();
    -- One block (one subtransaction per call, no XID: nothing is written
    -- in it) turns a cast the patterns let through into invalid_batch
    -- naming the event; i and field keep their values when it fires.
    BEGIN
        FOR ev IN SELECT e FROM pg_catalog.jsonb_array_elements(events) AS e LOOP
            i := i + 1;
            field := NULL;
            IF pg_catalog.jsonb_typeof(ev) <> 'object' THEN
                RAISE EXCEPTION 'invalid_batch: events[%] is a JSON %, not an event object', i, pg_catalog.jsonb_typeof(ev)
                    USING ERRCODE = 'SV008';
            END IF;
            SELECT k INTO bad FROM pg_catalog.jsonb_object_keys(ev) AS k
             WHERE k NOT IN ('user_id', 'kind', 'payload', 'occurred_at', 'event_id')
             ORDER BY k LIMIT 1;
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION 'invalid_batch: events[%] has an unknown field %', i, pg_catalog.to_jsonb(bad)::text
                    USING ERRCODE = 'SV008',
                          HINT = 'An event has user_id, kind and optionally payload, occurred_at, event_id; the source is the batch''s.';
            END IF;
            FOREACH field IN ARRAY ARRAY['user_id', 'kind', 'occurred_at', 'event_id'] LOOP
                t := pg_catalog.jsonb_typeof(ev -> field);
                IF t IS NOT NULL AND t NOT IN ('string', 'null') THEN
                    RAISE EXCEPTION 'invalid_batch: events[%].% must be a JSON string, got %', i, field, t
                        USING ERRCODE = 'SV008';
                END IF;
            END LOOP;
            v_user := ev ->> 'user_id';
            v_kind := ev ->> 'kind';
            v_payload := CASE WHEN ev ? 'payload' THEN ev -> 'payload' ELSE '{}'::jsonb END;
            field := 'occurred_at';
            t := ev ->> 'occurred_at';
            IF t IS NULL THEN
                v_time := pg_catalog.now();
            ELSIF t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$' THEN
                -- Digits past the 6th are dropped, not rounded (the SDK's
                -- trunc_subsecs(6)): .9999999 stays in its second.
                IF t ~ '\.[0-9]{7}' THEN
                    t := pg_catalog.regexp_replace(t, '(\.[0-9]{6})[0-9]+', '\1');
                END IF;
                v_time := t::timestamptz;
            ELSE
                RAISE EXCEPTION 'invalid_batch: events[%].occurred_at % is not an RFC 3339 time with an offset (and at most 9 fraction digits)', i,
                        pg_catalog.to_jsonb(pg_catalog."left"(t, 80))::text
                    USING ERRCODE = 'SV008',
                          HINT = 'e.g. "2026-11-20T09:15:00.123456Z" or "2026-11-20T10:15:00+01:00"';
            END IF;
            field := 'event_id';
            t := ev ->> 'event_id';
            IF t IS NULL THEN
                v_id := strata_outbox.uuidv7();
            ELSIF t ~ '^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$' THEN
                v_id := t::uuid;
            ELSE
                RAISE EXCEPTION 'invalid_batch: events[%].event_id % is not a UUID', i,
                        pg_catalog.to_jsonb(pg_catalog."left"(t, 80))::text
                    USING ERRCODE = 'SV008';
            END IF;
            field := NULL;
            PERFORM strata_outbox._enqueue_check(pg_catalog.format('events[%s]: ', i), v_user, v_kind, v_payload,
                                                 v_time, lim.max_payload_bytes, lim.earliest, lim.latest);
            ids := ids || v_id;
            users := users || v_user;
            kinds := kinds || v_kind;
            times := times || v_time;
            payloads := payloads || v_payload;
        END LOOP;
    EXCEPTION WHEN data_exception THEN
        GET STACKED DIAGNOSTICS bad = MESSAGE_TEXT;
        RAISE EXCEPTION 'invalid_batch: events[%]%: %', i, COALESCE('.' || field, ''), bad
            USING ERRCODE = 'SV008';
    END;
    INSERT INTO strata_outbox.events (event_id, user_id, kind, occurred_at, source, payload)
    SELECT e, u, k, o, src, p
      FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(users), pg_catalog.unnest(kinds),
                      pg_catalog.unnest(times), pg_catalog.unnest(payloads))
           WITH ORDINALITY AS r(e, u, k, o, p, n)
     ORDER BY n;
    RETURN ids;
END
$$;

COMMENT ON FUNCTION strata_outbox.enqueue_many(jsonb, text) IS
    'Enqueue a JSON array of events ({user_id, kind, payload?, occurred_at?, event_id?}) in the caller''s transaction, all checked before any is inserted (SQLSTATE SV001..SV008, the message names events[i]); returns the event_ids in input order';

REVOKE ALL ON FUNCTION
    strata_outbox.uuidv7(),
    strata_outbox._enqueue_limits(),
    strata_outbox._enqueue_source(text),
    strata_outbox._enqueue_check(text, text, text, jsonb, timestamptz, bigint, timestamptz, timestamptz),
    strata_outbox.enqueue(text, text, jsonb, timestamptz, uuid, text),
    strata_outbox.enqueue(text, text, jsonb, timestamp, uuid, text),
    strata_outbox.enqueue_many(jsonb, text)
FROM PUBLIC;

-- The role SQL producers are granted: EXECUTE on the two functions (and
-- enqueue's refusing overload, so a local time gets its clear error and
-- not a permission error, and uuidv7(), which enqueue's event_id default
-- calls in the caller's name), USAGE on the schema, nothing on the table.
-- Roles are cluster-wide: the first producer database migrated creates
-- it, the others find it and use it as it is, with a WARNING when it can
-- log in or is a superuser (it is meant to be a NOLOGIN group role that
-- holds grants: a superuser one makes every member a superuser through
-- SET ROLE). A migrating user without CREATEROLE (some managed Postgres)
-- does not fail the migration: it skips the role with a NOTICE saying
-- what an administrator must run.
DO $$
DECLARE
    can_login boolean;
    is_super boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'strata_producer') THEN
        BEGIN
            CREATE ROLE strata_producer NOLOGIN;
            COMMENT ON ROLE strata_producer IS
                'Strata SQL producers: may call strata_outbox.enqueue/enqueue_many, nothing else';
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'strata: role strata_producer not created (% lacks CREATEROLE); an administrator should run: CREATE ROLE strata_producer NOLOGIN; GRANT USAGE ON SCHEMA strata_outbox TO strata_producer; GRANT EXECUTE ON FUNCTION strata_outbox.enqueue(text, text, jsonb, timestamptz, uuid, text), strata_outbox.enqueue(text, text, jsonb, timestamp, uuid, text), strata_outbox.enqueue_many(jsonb, text), strata_outbox.uuidv7() TO strata_producer;',
                    current_user;
            -- Another database of the cluster migrating at the same moment.
            WHEN duplicate_object OR unique_violation THEN
                NULL;
        END;
    END IF;
    SELECT rolcanlogin, rolsuper INTO can_login, is_super
      FROM pg_catalog.pg_roles WHERE rolname = 'strata_producer';
    IF FOUND THEN
        IF can_login OR is_super THEN
            RAISE WARNING 'strata: role strata_producer exists with %; it should be NOLOGIN and NOSUPERUSER',
                    pg_catalog.concat_ws(' and ', CASE WHEN can_login THEN 'LOGIN' END,
                                         CASE WHEN is_super THEN 'SUPERUSER' END)
                USING DETAIL = pg_catalog.concat_ws(' ',
                          CASE WHEN can_login THEN 'With LOGIN, whoever knows its password connects as the shared producer role rather than as one service.' END,
                          CASE WHEN is_super THEN 'As a superuser, every role granted strata_producer can SET ROLE strata_producer and bypass every privilege.' END),
                      HINT = 'The migration continues and grants to it as it is. An administrator should run: ALTER ROLE strata_producer NOLOGIN NOSUPERUSER;';
        END IF;
        GRANT USAGE ON SCHEMA strata_outbox TO strata_producer;
        GRANT EXECUTE ON FUNCTION
            strata_outbox.enqueue(text, text, jsonb, timestamptz, uuid, text),
            strata_outbox.enqueue(text, text, jsonb, timestamp, uuid, text),
            strata_outbox.enqueue_many(jsonb, text),
            strata_outbox.uuidv7()
        TO strata_producer;
    END IF;
END
$$;
