"""The SQL producer API from Python (psycopg 3), for the end-to-end tests.

Connects to a migrated producer database as its superuser (the URL), creates
a throwaway LOGIN role that is only a member of strata_producer, a schema
with a business table it may write, and then, connected as that role:

- runs the README's Python example (a business insert and
  strata_outbox.enqueue in one transaction) and checks the outbox row as
  the superuser;
- checks explicit event_id / occurred_at, the source taken from the
  setting strata.source, the accepted boundaries, and enqueue_many (ids in
  input order);
- checks the role cannot touch strata_outbox.events directly;
- triggers every validation error, asserting its SQLSTATE, that its message
  starts with the SDK's code, and that the business insert of the same
  transaction was rolled back and no outbox row was written;
- checks a local time (a naive datetime, sent as timestamp without time
  zone) is refused by enqueue with 42804 in every call shape that passes a
  payload, while aware datetimes, None, RFC 3339 strings and an explicit
  AT TIME ZONE are taken, whatever the session's TimeZone;
- checks enqueue_many truncates 7 to 9 fraction digits to microseconds as
  the SDK does (never rounds) and refuses more.

Prints one JSON object on stdout ({"ok": ..., "checks": N, "failures":
[...], "errors": {sqlstate: code}, "event_ids": [...]}) and exits 1 when a
check failed. The role and schema are dropped at the end; the events
written are deleted too unless --keep-events is given (then a relay may
ship them: their user_ids start with the "prefix" printed).

usage: sql_producer.py DATABASE_URL [--keep-events]
"""

import datetime as dt
import json
import secrets
import sys
import traceback
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

# --- The README example, verbatim (the table is the test's own). -----------

def withdraw(conn: psycopg.Connection, user_id: str, amount: str) -> uuid.UUID:
    """Records a withdrawal and its event in one transaction; returns the event id."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO withdrawals (user_id, amount) VALUES (%s, %s)", (user_id, amount)
        )
        (event_id,) = conn.execute(
            "SELECT strata_outbox.enqueue(%s, %s, %s, source => 'payments')",
            (user_id, "withdrawal", Jsonb({"amount": amount, "currency": "EUR"})),
        ).fetchone()
    return event_id  # committed: the event exists iff the withdrawal does

# --- end of the README example ---------------------------------------------

SDK_CODES = {
    "SV001": "empty_user_id",
    "SV002": "user_id_too_long",
    "SV003": "invalid_kind",
    "SV004": "payload_not_object",
    "SV005": "payload_too_large",
    "SV006": "invalid_source",
    "SV007": "occurred_at_out_of_window",
    "SV008": "invalid_batch",
}

ENQUEUE = "SELECT strata_outbox.enqueue(%s, %s, %s, %s, %s, %s)"
ENQUEUE_MANY = "SELECT strata_outbox.enqueue_many(%s, %s)"


class Checker:
    def __init__(self) -> None:
        self.count = 0
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        self.count += 1
        if not ok:
            self.failures.append(what)
        return ok


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    keep_events = "--keep-events" in sys.argv[1:]
    admin_url = args[0]
    token = secrets.token_hex(4)
    role = f"strata_sqlprod_{token}"
    schema = f"strata_sqlprod_{token}"
    password = secrets.token_urlsafe(18)
    prefix = f"sqlprod-{token}-"
    c = Checker()
    errors_seen: dict[str, str] = {}
    event_ids: list[str] = []

    admin = psycopg.connect(admin_url, autocommit=True)
    try:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE strata_producer").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL(
                """CREATE SCHEMA {s};
                   CREATE TABLE {s}.withdrawals (
                       id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                       user_id text NOT NULL,
                       amount numeric NOT NULL);
                   GRANT USAGE ON SCHEMA {s} TO {r};
                   GRANT SELECT, INSERT ON {s}.withdrawals TO {r}"""
            ).format(s=sql.Identifier(schema), r=sql.Identifier(role))
        )
        params = conninfo_to_dict(admin_url)
        params.update(user=role, password=password, options=f"-c search_path={schema}")
        conn = psycopg.connect(make_conninfo(**params))
        try:
            run(conn, admin, c, prefix, schema, errors_seen, event_ids)
        finally:
            conn.close()
    except Exception:  # a crash is a failed check, reported as JSON too
        c.check(False, "crashed: " + traceback.format_exc())
    finally:
        try:
            if not keep_events:
                admin.execute(
                    "DELETE FROM strata_outbox.events WHERE starts_with(user_id, %s)", (prefix,)
                )
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        except Exception:
            c.check(False, "cleanup: " + traceback.format_exc())
        admin.close()

    print(
        json.dumps(
            {
                "ok": not c.failures,
                "checks": c.count,
                "failures": c.failures,
                "errors": errors_seen,
                "event_ids": event_ids,
                "prefix": prefix,
            },
            indent=1,
        )
    )
    return 0 if not c.failures else 1


def outbox_row(admin: psycopg.Connection, event_id: uuid.UUID):
    return admin.execute(
        "SELECT user_id, kind, source, payload, occurred_at, id"
        " FROM strata_outbox.events WHERE event_id = %s",
        (event_id,),
    ).fetchall()


def is_v7_now(c: Checker, event_id: uuid.UUID, what: str) -> None:
    c.check(isinstance(event_id, uuid.UUID), f"{what}: returns a uuid, got {event_id!r}")
    if not isinstance(event_id, uuid.UUID):
        return
    c.check(event_id.version == 7, f"{what}: {event_id} is version {event_id.version}, not 7")
    c.check(event_id.variant == uuid.RFC_4122, f"{what}: {event_id} variant {event_id.variant}")
    ms = int.from_bytes(event_id.bytes[:6], "big")
    now_ms = dt.datetime.now(dt.timezone.utc).timestamp() * 1000
    c.check(abs(now_ms - ms) < 60_000, f"{what}: {event_id} timestamp {ms} is not near now {now_ms:.0f}")


def run(conn, admin, c: Checker, prefix, schema, errors_seen, event_ids) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    day = dt.timedelta(days=1)
    withdrawals = sql.SQL("{}.withdrawals").format(sql.Identifier(schema))

    def business_rows(user_id) -> int:
        return admin.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE user_id IS NOT DISTINCT FROM %s").format(
                withdrawals
            ),
            (user_id,),
        ).fetchone()[0]

    def outbox_rows(user_id) -> int:
        return admin.execute(
            "SELECT count(*) FROM strata_outbox.events WHERE user_id IS NOT DISTINCT FROM %s",
            (user_id,),
        ).fetchone()[0]

    # 1. The README example commits the withdrawal and its event together.
    user = prefix + "user-42"
    event_id = withdraw(conn, user, "250.00")
    is_v7_now(c, event_id, "README withdraw")
    event_ids.append(str(event_id))
    rows = outbox_row(admin, event_id)
    if c.check(len(rows) == 1, f"README withdraw: {len(rows)} outbox rows for {event_id}"):
        user_id, kind, source, payload, occurred_at, _ = rows[0]
        c.check(
            (user_id, kind, source, payload) == (user, "withdrawal", "payments", {"amount": "250.00", "currency": "EUR"}),
            f"README withdraw: row {rows[0]!r}",
        )
        c.check(abs(occurred_at - now) < dt.timedelta(minutes=1), f"README withdraw: occurred_at {occurred_at}")
    c.check(business_rows(user) == 1, "README withdraw: the business row is not committed")

    # 2. Explicit event_id and occurred_at, the source from the setting, and
    #    the accepted boundaries (256-byte user_id, 64-byte kind, 65536-byte
    #    payload, 399 days back, 23 hours ahead); explicit NULLs = defaults.
    given = uuid.UUID("0193a5e4-7c1e-7d2a-9f00-5b1c2d3e4f50")
    at = now - 10 * day
    conn.execute("SET strata.source = 'payments-sql'")  # for the session, once committed
    conn.commit()
    boundary_payload = {"k": "x" * (65536 - len('{"k": ""}'))}
    cases = [
        ("explicit id and time", (prefix + "explicit", "login", Jsonb({}), at, given, None), "payments-sql", at),
        ("256-byte user_id", ((prefix + "u" * 256)[:256], "login", Jsonb({}), None, None, None), "payments-sql", None),
        ("64-byte kind", (prefix + "kind", "k" * 64, Jsonb({}), None, None, "svc"), "svc", None),
        ("65536-byte payload", (prefix + "big", "login", Jsonb(boundary_payload), None, None, "s" * 64), "s" * 64, None),
        ("399 days back", (prefix + "past", "login", Jsonb({}), now - 399 * day, None, None), "payments-sql", now - 399 * day),
        ("23 hours ahead", (prefix + "future", "login", Jsonb({}), now + dt.timedelta(hours=23), None, None), "payments-sql", now + dt.timedelta(hours=23)),
    ]
    for what, call, source, when in cases:
        with conn.transaction():
            (got,) = conn.execute(ENQUEUE, call).fetchone()
        event_ids.append(str(got))
        if call[4] is not None:
            c.check(got == call[4], f"{what}: returned {got}, not the given {call[4]}")
        else:
            is_v7_now(c, got, what)
        rows = outbox_row(admin, got)
        if c.check(len(rows) == 1, f"{what}: {len(rows)} outbox rows"):
            user_id, kind, src, payload, occurred_at, _ = rows[0]
            c.check(user_id == call[0] and kind == call[1], f"{what}: row {user_id!r} {kind!r}")
            c.check(src == source, f"{what}: source {src!r}, expected {source!r}")
            c.check(payload == call[2].obj, f"{what}: payload differs")
            if when is not None:
                c.check(occurred_at == when, f"{what}: occurred_at {occurred_at} != {when}")
            else:
                c.check(abs(occurred_at - now) < dt.timedelta(minutes=1), f"{what}: occurred_at {occurred_at}")
    conn.execute("RESET strata.source")
    conn.commit()

    # 3. enqueue_many: ids in input order, every field, payload default {}.
    batch = [
        {"user_id": prefix + "b0", "kind": "login"},
        {"user_id": prefix + "b1", "kind": "deposit", "payload": {"amount": "10.00"},
         "occurred_at": (now - day).isoformat(), "event_id": "0193a5e4-7c1e-7d2a-9f00-5b1c2d3e4f51"},
        {"user_id": prefix + "b2", "kind": "logout", "occurred_at": None, "event_id": None},
    ]
    with conn.transaction():
        conn.execute(sql.SQL("INSERT INTO withdrawals (user_id, amount) VALUES (%s, 1)"), (prefix + "batch",))
        (ids,) = conn.execute(ENQUEUE_MANY, (Jsonb(batch), "payments")).fetchone()
    c.check(isinstance(ids, list) and len(ids) == 3, f"enqueue_many: returned {ids!r}")
    event_ids.extend(str(i) for i in ids)
    c.check(ids[1] == uuid.UUID(batch[1]["event_id"]), f"enqueue_many: ids[1] = {ids[1]}")
    is_v7_now(c, ids[0], "enqueue_many[0]")
    is_v7_now(c, ids[2], "enqueue_many[2]")
    outbox_ids = []
    for i, (event, got) in enumerate(zip(batch, ids)):
        rows = outbox_row(admin, got)
        if c.check(len(rows) == 1, f"enqueue_many[{i}]: {len(rows)} rows"):
            user_id, kind, src, payload, occurred_at, outbox_id = rows[0]
            outbox_ids.append(outbox_id)
            c.check((user_id, kind, src) == (event["user_id"], event["kind"], "payments"), f"enqueue_many[{i}]: {rows[0]!r}")
            c.check(payload == event.get("payload", {}), f"enqueue_many[{i}]: payload {payload!r}")
            if event.get("occurred_at"):
                c.check(occurred_at == now - day, f"enqueue_many[{i}]: occurred_at {occurred_at}")
    c.check(outbox_ids == sorted(outbox_ids), f"enqueue_many: inserted out of input order {outbox_ids}")

    # 4. The role may call the functions and nothing else.
    for what, statement in [
        ("INSERT", "INSERT INTO strata_outbox.events (user_id, kind, source) VALUES ('u', 'login', 's')"),
        ("SELECT", "SELECT count(*) FROM strata_outbox.events"),
        ("internal function", "SELECT strata_outbox._enqueue_source('s')"),
    ]:
        try:
            with conn.transaction():
                conn.execute(statement)
            c.check(False, f"direct {what} on the outbox was allowed")
        except psycopg.Error as err:
            c.check(err.sqlstate == "42501", f"direct {what}: SQLSTATE {err.sqlstate}, expected 42501")

    # 5. Every rule: the SQLSTATE, the message's code, and the business
    #    insert of the same transaction rolled back with the event.
    huge = {"k": "x" * (65536 - len('{"k": ""}') + 1)}
    # 257 bytes in fewer than 257 characters: the limit counts bytes.
    rest = 257 - len(prefix)
    long_user = prefix + "é" * (rest // 2) + "u" * (rest % 2)
    assert len(long_user.encode()) == 257 and len(long_user) < 257
    single = [
        ("SV001", "empty user_id", ("", "login", Jsonb({}), None, None, "payments")),
        ("SV001", "NULL user_id", (None, "login", Jsonb({}), None, None, "payments")),
        ("SV002", "257-byte user_id", (long_user, "login", Jsonb({}), None, None, "payments")),
        ("SV003", "kind with a space", (prefix + "k1", "Bad Kind", Jsonb({}), None, None, "payments")),
        ("SV003", "65-byte kind", (prefix + "k2", "k" * 65, Jsonb({}), None, None, "payments")),
        ("SV003", "non-ASCII kind", (prefix + "k3", "dépôt", Jsonb({}), None, None, "payments")),
        ("SV003", "NULL kind", (prefix + "k4", None, Jsonb({}), None, None, "payments")),
        ("SV004", "array payload", (prefix + "p1", "login", Jsonb([1]), None, None, "payments")),
        ("SV004", "JSON null payload", (prefix + "p2", "login", Jsonb(None), None, None, "payments")),
        ("SV004", "SQL NULL payload", (prefix + "p3", "login", None, None, None, "payments")),
        ("SV005", "65537-byte payload", (prefix + "p4", "login", Jsonb(huge), None, None, "payments")),
        ("SV006", "empty source", (prefix + "s1", "login", Jsonb({}), None, None, "")),
        ("SV006", "65-byte source", (prefix + "s2", "login", Jsonb({}), None, None, "s" * 65)),
        ("SV006", "no source", (prefix + "s3", "login", Jsonb({}), None, None, None)),
        ("SV007", "401 days back", (prefix + "t1", "login", Jsonb({}), now - 401 * day, None, "payments")),
        ("SV007", "2 days ahead", (prefix + "t2", "login", Jsonb({}), now + 2 * day, None, "payments")),
        ("SV007", "infinity", (prefix + "t3", "login", Jsonb({}), "infinity", None, "payments")),
        ("SV007", "-infinity", (prefix + "t4", "login", Jsonb({}), "-infinity", None, "payments")),
    ]
    ok_event = {"user_id": prefix + "m0", "kind": "login"}
    many = [
        ("SV008", "empty batch", [], "invalid_batch: no events to enqueue"),
        ("SV008", "not an array", {"user_id": "u"}, None),
        ("SV008", "unknown field", [ok_event, {"user_id": prefix + "m1", "kind": "login", "occured_at": "x"}], "invalid_batch: events[1] "),
        ("SV008", "time without offset", [{"user_id": prefix + "m2", "kind": "login", "occurred_at": "2026-01-01 10:00"}], "invalid_batch: events[0].occurred_at"),
        ("SV008", "impossible time", [{"user_id": prefix + "m3", "kind": "login", "occurred_at": "2026-13-01T10:00:00Z"}], "invalid_batch: events[0].occurred_at"),
        ("SV008", "10 fraction digits", [ok_event, {"user_id": prefix + "m9", "kind": "login", "occurred_at": (now - day).strftime("%Y-%m-%dT%H:%M:%S.1234567891Z")}], "invalid_batch: events[1].occurred_at"),
        ("SV008", "bad event_id", [{"user_id": prefix + "m4", "kind": "login", "event_id": "nope"}], "invalid_batch: events[0].event_id"),
        ("SV008", "user_id not a string", [{"user_id": 42, "kind": "login"}], "invalid_batch: events[0].user_id"),
        ("SV001", "batch: missing user_id", [ok_event, {"kind": "login"}], "empty_user_id: events[1]: "),
        ("SV003", "batch: bad kind", [ok_event, ok_event, {"user_id": prefix + "m5", "kind": "Bad Kind"}], "invalid_kind: events[2]: "),
        ("SV004", "batch: null payload", [{"user_id": prefix + "m6", "kind": "login", "payload": None}], "payload_not_object: events[0]: "),
        ("SV005", "batch: huge payload", [ok_event, {"user_id": prefix + "m7", "kind": "login", "payload": huge}], "payload_too_large: events[1]: "),
        ("SV007", "batch: too old", [{"user_id": prefix + "m8", "kind": "login", "occurred_at": (now - 500 * day).isoformat()}], "occurred_at_out_of_window: events[0]: "),
    ]

    def expect_error(sqlstate: str, what: str, user_id, marker: str, call, prefix_text=None) -> None:
        code = SDK_CODES[sqlstate]
        expected_start = prefix_text or f"{code}: "
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO withdrawals (user_id, amount) VALUES (%s, 1)", (marker,)
                )
                call()
            c.check(False, f"{what}: no error")
        except psycopg.Error as err:
            message = err.diag.message_primary or ""
            c.check(err.sqlstate == sqlstate, f"{what}: SQLSTATE {err.sqlstate}, expected {sqlstate} ({message})")
            c.check(message.startswith(expected_start), f"{what}: message {message!r} does not start with {expected_start!r}")
            if err.sqlstate == sqlstate:
                errors_seen.setdefault(sqlstate, message.split(":", 1)[0])
        c.check(business_rows(marker) == 0, f"{what}: the business insert was not rolled back")
        if user_id is not None:
            c.check(outbox_rows(user_id) == 0, f"{what}: an outbox row was written")

    for sqlstate, what, call in single:
        expect_error(sqlstate, what, call[0], prefix + "marker-" + what, lambda call=call: conn.execute(ENQUEUE, call))
    for sqlstate, what, events, start in many:
        expect_error(
            sqlstate, what, prefix + "m0", prefix + "marker-" + what,
            lambda events=events: conn.execute(ENQUEUE_MANY, (Jsonb(events), "payments")),
            start,
        )

    # The README's error handling: an invalid event fails the withdrawal.
    try:
        withdraw(conn, "", "250.00")
        c.check(False, "README withdraw with an empty user_id: no error")
    except psycopg.Error as err:
        c.check(err.sqlstate == "SV001", f"README withdraw with an empty user_id: {err.sqlstate}")
    c.check(business_rows("") == 0, "README withdraw with an empty user_id: business row committed")
    c.check(
        set(errors_seen) == set(SDK_CODES),
        f"not every SQLSTATE was seen: {sorted(set(SDK_CODES) - set(errors_seen))}",
    )
    for sqlstate, code in errors_seen.items():
        c.check(code == SDK_CODES[sqlstate], f"{sqlstate} raised as {code}, expected {SDK_CODES[sqlstate]}")

    # 6. Local times. A naive datetime is sent as timestamp without time
    #    zone, which Postgres would convert in the session's TimeZone: the
    #    overload refuses it (42804), even when the zone is UTC. Every other
    #    occurred_at still reaches the timestamptz function. A zone far from
    #    UTC makes a silent conversion visible.
    conn.execute("SET TimeZone = 'Asia/Kathmandu'")  # +05:45
    conn.commit()
    at = (now - 2 * day).replace(microsecond=654321)
    naive = at.replace(tzinfo=None)  # at's UTC wall time
    local_calls = [
        ("naive, positional", prefix + "n1", ENQUEUE, (prefix + "n1", "login", Jsonb({}), naive, None, "payments")),
        ("naive, 4 positional", prefix + "n2", "SELECT strata_outbox.enqueue(%s, %s, %s, %s)",
         (prefix + "n2", "login", Jsonb({}), naive)),
        ("naive, by name after payload", prefix + "n3",
         "SELECT strata_outbox.enqueue(%s, %s, %s, occurred_at => %s, source => 'payments')",
         (prefix + "n3", "login", Jsonb({"a": 1}), naive)),
        ("naive, all by name", prefix + "n4",
         "SELECT strata_outbox.enqueue(source => 'payments', occurred_at => %s, payload => %s, kind => %s, user_id => %s)",
         (naive, Jsonb({}), "login", prefix + "n4")),
        ("naive, payload as JSON text", prefix + "n5", ENQUEUE, (prefix + "n5", "login", '{"a": 1}', naive, None, "payments")),
        ("naive, session TimeZone UTC", prefix + "n6", ENQUEUE, (prefix + "n6", "login", Jsonb({}), naive, None, "payments")),
    ]
    for what, user_id, statement, params in local_calls:
        zone = "UTC" if "UTC" in what else "Asia/Kathmandu"
        marker = prefix + "marker-" + what
        try:
            with conn.transaction():
                conn.execute("INSERT INTO withdrawals (user_id, amount) VALUES (%s, 1)", (marker,))
                conn.execute("SELECT set_config('TimeZone', %s, true)", (zone,))
                conn.execute(statement, params)
            c.check(False, f"{what}: a local time was accepted")
        except psycopg.Error as err:
            message = err.diag.message_primary or ""
            c.check(err.sqlstate == "42804", f"{what}: SQLSTATE {err.sqlstate}, expected 42804 ({message})")
            c.check("timestamp without time zone" in message and "timestamptz" in message,
                    f"{what}: message {message!r}")
            c.check(f"({zone})" in (err.diag.message_detail or ""), f"{what}: detail {err.diag.message_detail!r}")
        c.check(business_rows(marker) == 0, f"{what}: the business insert was not rolled back")
        c.check(outbox_rows(user_id) == 0, f"{what}: an outbox row was written")
    kathmandu = dt.timezone(dt.timedelta(hours=5, minutes=45))
    taken = [
        ("aware, another zone", ENQUEUE, (prefix + "a1", "login", Jsonb({}), at.astimezone(kathmandu), None, "payments"), at),
        ("RFC 3339 string", ENQUEUE, (prefix + "a2", "login", Jsonb({}), at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), None, "payments"), at),
        ("None", ENQUEUE, (prefix + "a3", "login", Jsonb({}), None, None, "payments"), None),
        ("naive AT TIME ZONE 'UTC'", "SELECT strata_outbox.enqueue(%s, %s, %s, %s AT TIME ZONE 'UTC', source => 'payments')",
         (prefix + "a4", "login", Jsonb({}), naive), at),
        ("aware by name, no payload", "SELECT strata_outbox.enqueue(%s, %s, occurred_at => %s, source => 'payments')",
         (prefix + "a5", "login", at), at),
        ("no occurred_at, two arguments", "SELECT strata_outbox.enqueue(%s, %s, source => 'payments')", (prefix + "a6", "login"), None),
    ]
    for what, statement, params, when in taken:
        try:
            with conn.transaction():
                (got,) = conn.execute(statement, params).fetchone()
        except psycopg.Error as err:
            c.check(False, f"{what}: refused: {err.sqlstate} {err.diag.message_primary}")
            continue
        event_ids.append(str(got))
        rows = outbox_row(admin, got)
        if c.check(len(rows) == 1, f"{what}: {len(rows)} outbox rows"):
            occurred_at = rows[0][4]
            if when is not None:
                c.check(occurred_at == when, f"{what}: occurred_at {occurred_at} != {when}")
            else:
                c.check(abs(occurred_at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1),
                        f"{what}: occurred_at {occurred_at}")
    conn.execute("RESET TimeZone")
    conn.commit()

    # 7. enqueue_many keeps microseconds as the SDK does: more fraction
    #    digits (up to 9) are cut, never rounded (rounding .9999999 would
    #    move the event into the next second, and day).
    base = (now - day).replace(hour=23, minute=59, second=59, microsecond=0)
    stamp = base.strftime("%Y-%m-%dT%H:%M:%S")
    digits = [
        (stamp + ".1234567Z", base.replace(microsecond=123456)),
        (stamp + ".999999999Z", base.replace(microsecond=999999)),
        (stamp + ".9999995Z", base.replace(microsecond=999999)),
        (base.astimezone(dt.timezone(dt.timedelta(hours=1))).strftime("%Y-%m-%dT%H:%M:%S") + ".00000099+01:00", base),
        (stamp + ".5Z", base.replace(microsecond=500000)),
    ]
    fraction_batch = [
        {"user_id": prefix + f"f{i}", "kind": "login", "occurred_at": text} for i, (text, _) in enumerate(digits)
    ]
    with conn.transaction():
        (ids,) = conn.execute(ENQUEUE_MANY, (Jsonb(fraction_batch), "payments")).fetchone()
    event_ids.extend(str(i) for i in ids)
    for (text, expected), got in zip(digits, ids):
        rows = outbox_row(admin, got)
        if c.check(len(rows) == 1, f"fraction {text}: {len(rows)} rows"):
            c.check(rows[0][4] == expected, f"fraction {text}: stored {rows[0][4]}, expected {expected} (truncated)")


if __name__ == "__main__":
    sys.exit(main())
