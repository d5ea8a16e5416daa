//! The ingest guarantees (G1, G2) under faults: tests 1-8 of the ingest
//! issue. Every test uses its own databases and real relay processes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, TimeZone, Utc};
use rand::Rng;
use serde_json::json;
use strata_producer::{NewEvent, Outbox};
use strata_relay::listener::LISTENER_APPLICATION_NAME;
use strata_relay::WORKER_APPLICATION_NAME;
use strata_tests::load::{self, LoadOptions};
use strata_tests::{
    check, http_get, metric_value, wait_until, Ledger, Outcome, StrataProcess, TestEnv,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Waits until the outbox is empty, then checks the ledger is clean.
async fn drained_and_clean(
    env: &TestEnv,
    ledger: &Ledger,
    timeout: Duration,
) -> anyhow::Result<()> {
    let drained = wait_until(timeout, || async {
        env.outbox_len().await.unwrap_or(-1) == 0
    })
    .await;
    let report = check(ledger, &env.hot().await?).await?;
    assert!(drained, "outbox not drained within {timeout:?}; {report}");
    assert!(report.is_clean(), "{report}");
    assert!(report.committed > 0, "{report}");
    Ok(())
}

/// Test 1 (G1): rolled-back transactions never appear, including ones that
/// sent NOTIFY before rolling back; committed ones all do. Also checks the
/// metrics endpoint counts what was shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_transactions_never_appear() -> anyhow::Result<()> {
    let env = TestEnv::new("g1").await?;
    let port = strata_embedded::free_port()?;
    let listen = format!("\"127.0.0.1:{port}\"");
    let _relay = StrataProcess::spawn(&env, "g1", &[("metrics.listen", &listen)], None)?;
    let ledger = Ledger::default();
    let cancel = CancellationToken::new();
    let options = LoadOptions {
        rollback_ratio: 0.4,
        notify_in_transaction: true,
        ..LoadOptions::default()
    };
    let tasks = load::start(&env.source_url, ledger.clone(), options, cancel.clone()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    load::stop(cancel, tasks).await;
    assert!(
        ledger.count(Outcome::RolledBack) > 10,
        "the test must roll some back"
    );
    drained_and_clean(&env, &ledger, Duration::from_secs(15)).await?;

    let body = http_get(port, "/metrics").await?;
    let shipped = metric_value(&body, "strata_relay_events_shipped_total{source=\"main\"}")
        .unwrap_or_default();
    assert_eq!(shipped as usize, ledger.count(Outcome::Committed), "{body}");
    assert!(
        body.contains("strata_relay_oldest_unshipped_seconds"),
        "{body}"
    );
    assert!(
        body.contains("strata_relay_reconciler_leader{source=\"main\"} 1"),
        "{body}"
    );
    Ok(())
}

/// Source and hot store in one database: each batch moves in a single
/// transaction; same guarantees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_database_moves_in_one_transaction() -> anyhow::Result<()> {
    let env = TestEnv::same_database("samedb").await?;
    let _relay = StrataProcess::spawn(&env, "samedb", &[], Some("after_claim=0.02"))?;
    let ledger = Ledger::default();
    let cancel = CancellationToken::new();
    let tasks = load::start(
        &env.source_url,
        ledger.clone(),
        LoadOptions::default(),
        cancel.clone(),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load::stop(cancel, tasks).await;
    let mut relay = StrataProcess::spawn(&env, "samedb-2", &[], None)?;
    drained_and_clean(&env, &ledger, Duration::from_secs(15)).await?;
    relay.sigterm()?;
    let status = relay.wait_exit(Duration::from_secs(10)).await;
    assert!(
        matches!(status, Some(s) if s.success()),
        "graceful exit: {status:?}\n{}",
        relay.log_tail()
    );
    Ok(())
}

/// Test 2 (G2): three relays under continuous load, one killed with
/// SIGKILL at random 20 times, plus crashes at deterministic points
/// (after the claim, after the hot commit, before the source release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_and_at_every_step() -> anyhow::Result<()> {
    let env = TestEnv::new("kill9").await?;
    let mut relays = StrataProcess::spawn_many(&env, "kill9", 3)?;
    let ledger = Ledger::default();
    let cancel = CancellationToken::new();
    let options = LoadOptions {
        connections: 4,
        pause: Duration::from_millis(2),
        ..LoadOptions::default()
    };
    let tasks = load::start(&env.source_url, ledger.clone(), options, cancel.clone()).await?;
    for kill in 0..20 {
        let pause = rand::thread_rng().gen_range(150..450);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::thread_rng().gen_range(0..relays.len());
        relays[victim].kill9();
        relays[victim] = StrataProcess::spawn(&env, &format!("kill9-r{kill}"), &[], None)?;
    }
    // Deterministic crash points: a relay armed to die at the point is
    // started, must die there, and is replaced.
    for point in [
        "after_claim",
        "before_hot_commit",
        "after_hot_commit",
        "before_source_release",
    ] {
        let mut armed = StrataProcess::spawn(
            &env,
            &format!("kill9-{point}"),
            &[],
            Some(&format!("{point}=1")),
        )?;
        let status = armed.wait_exit(Duration::from_secs(20)).await;
        if status.is_none() {
            let activity = strata_tests::connect(&env.source_url).await?
                .query("SELECT application_name, state, wait_event_type, wait_event, left(query, 80), now() - xact_start FROM pg_stat_activity WHERE datname IS NOT NULL", &[])
                .await?;
            for row in activity {
                eprintln!(
                    "{:?} {:?} {:?} {:?} {:?}",
                    row.get::<_, Option<String>>(0),
                    row.get::<_, Option<String>>(1),
                    row.get::<_, Option<String>>(2),
                    row.get::<_, Option<String>>(3),
                    row.get::<_, Option<String>>(4)
                );
            }
        }
        assert!(
            matches!(status, Some(s) if !s.success()),
            "relay armed at {point} did not crash: {status:?}\n{}",
            armed.log_tail()
        );
        assert!(
            armed
                .log_tail()
                .contains(&format!("failpoint {point} fired")),
            "{}",
            armed.log_tail()
        );
    }
    load::stop(cancel, tasks).await;
    drained_and_clean(&env, &ledger, Duration::from_secs(30)).await?;
    let report = check(&ledger, &env.hot().await?).await?;
    println!("kill -9 x20 + 4 crash points: {report}");
    Ok(())
}

/// Test 3: a slow transaction holding a lower id commits long after later
/// ids were shipped; it is not lost (no `id > last_seen` cursor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_transaction_committing_after_later_ids_is_not_lost() -> anyhow::Result<()> {
    let env = TestEnv::new("slow").await?;
    let _relay = StrataProcess::spawn(&env, "slow", &[], None)?;
    let outbox = Outbox::new("slow-test")?;
    let mut slow_client = env.source().await?;
    let slow_tx = slow_client.transaction().await?;
    let slow_at = Utc::now().trunc_subsecs(6);
    let slow_id = outbox
        .enqueue_pg(
            &slow_tx,
            &NewEvent::new("slow-user", "withdrawal").occurred_at(slow_at),
        )
        .await?;
    let slow_row_id: i64 = slow_tx
        .query_one(
            "SELECT id FROM strata_outbox.events WHERE event_id = $1",
            &[&slow_id],
        )
        .await?
        .get(0);

    let ledger = Ledger::default();
    let cancel = CancellationToken::new();
    let tasks = load::start(
        &env.source_url,
        ledger.clone(),
        LoadOptions::default(),
        cancel.clone(),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load::stop(cancel, tasks).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            env.outbox_len().await.unwrap_or(-1) == 0
        })
        .await,
        "later rows shipped"
    );
    let shipped_max: i64 = env
        .source()
        .await?
        .query_one("SELECT last_value FROM strata_outbox.events_id_seq", &[])
        .await?
        .get(0);
    assert!(
        shipped_max > slow_row_id + 10,
        "later ids committed and shipped first"
    );

    slow_tx.commit().await?;
    ledger.record(
        &[strata_tests::ledger::LedgerEvent {
            event_id: slow_id,
            user_id: "slow-user".into(),
            kind: "withdrawal".into(),
            occurred_at: slow_at,
            payload_text: "{}".into(),
        }],
        Outcome::Committed,
    );
    let hot = env.hot().await?;
    let arrived = wait_until(Duration::from_secs(5), || async {
        hot.query_opt(
            "SELECT 1 FROM strata.activity WHERE event_id = $1",
            &[&slow_id],
        )
        .await
        .map(|r| r.is_some())
        .unwrap_or(false)
    })
    .await;
    assert!(arrived, "the slow transaction's event was lost");
    let report = check(&ledger, &hot).await?;
    assert!(report.is_clean(), "{report}");
    Ok(())
}

/// Test 4: lost notifications. The relays' LISTEN connections are
/// terminated over and over; then notifications are disabled entirely.
/// Everything still arrives within the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_notifications_are_covered_by_the_poll() -> anyhow::Result<()> {
    let env = TestEnv::new("nonotify").await?;
    let poll = Duration::from_secs(1);
    let _relay = StrataProcess::spawn(&env, "nonotify", &[("relay.poll_interval", "1s")], None)?;
    let ledger = Ledger::default();

    // (a) LISTEN connections killed every 200 ms under load.
    let cancel = CancellationToken::new();
    let tasks = load::start(
        &env.source_url,
        ledger.clone(),
        LoadOptions::default(),
        cancel.clone(),
    )
    .await?;
    let admin = env.source().await?;
    let mut terminated = 0i64;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let row = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND datname = current_database()",
                &[&LISTENER_APPLICATION_NAME],
            )
            .await?;
        terminated += row.get::<_, i64>(0);
    }
    load::stop(cancel, tasks).await;
    assert!(
        terminated >= 5,
        "listener sessions were terminated {terminated} times"
    );
    let stopped = Instant::now();
    drained_and_clean(&env, &ledger, poll + Duration::from_secs(3)).await?;
    println!("(a) drained {:?} after the last commit", stopped.elapsed());

    // (b) no notification at all: producers never notify.
    let cancel = CancellationToken::new();
    let quiet = LoadOptions {
        doorbell: false,
        notify_in_transaction: false,
        pause: Duration::from_millis(20),
        ..LoadOptions::default()
    };
    let tasks = load::start(&env.source_url, ledger.clone(), quiet, cancel.clone()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load::stop(cancel, tasks).await;
    let stopped = Instant::now();
    drained_and_clean(&env, &ledger, poll + Duration::from_secs(2)).await?;
    println!(
        "(b) drained {:?} after the last commit with no notifications",
        stopped.elapsed()
    );
    Ok(())
}

/// Test 5: reconciler failover. Kill the leader: a new one is elected and
/// acts within seconds; never two leaders at once (sampled from pg_locks
/// throughout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_failover_within_seconds_never_two_leaders() -> anyhow::Result<()> {
    let env = TestEnv::new("failover").await?;
    let mut relays = StrataProcess::spawn_many(&env, "failover", 3)?;
    let hot = env.hot().await?;
    let max_holders = Arc::new(AtomicI64::new(0));
    let sampler_cancel = CancellationToken::new();
    // pg_locks shows a bigint advisory key as classid (high 32 bits) and
    // objid (low 32 bits) with objsubid 1.
    let key = strata_relay::reconcile::election_key("main") as u64;
    let (key_high, key_low) = ((key >> 32) as i64, (key & 0xffff_ffff) as i64);
    let sampler = {
        let (max_holders, cancel, url) = (
            max_holders.clone(),
            sampler_cancel.clone(),
            env.hot_url.clone(),
        );
        tokio::spawn(async move {
            let client = strata_tests::connect(&url).await?;
            while !cancel.is_cancelled() {
                let n: i64 = client
                    .query_one(
                        "SELECT count(DISTINCT pid) FROM pg_locks \
                         WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
                           AND classid::bigint = $1 AND objid::bigint = $2 \
                           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                        &[&key_high, &key_low],
                    )
                    .await?
                    .get(0);
                max_holders.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            status(&hot).await.is_some_and(|s| s.2)
        })
        .await,
        "no reconciler elected"
    );
    for round in 0..3 {
        let (epoch, holder, _) = status(&hot).await.expect("status");
        let pid: u32 = holder.rsplit(':').next().unwrap_or("0").parse()?;
        let leader = relays
            .iter()
            .position(|r| r.pid() == pid)
            .expect("the leader is one of our relays");
        let killed_at = Instant::now();
        relays[leader].kill9();
        let took_over = wait_until(Duration::from_secs(5), || async {
            status(&hot)
                .await
                .is_some_and(|(e, h, acted)| e > epoch && h != holder && acted)
        })
        .await;
        assert!(
            took_over,
            "no new reconciler acted within 5 s of killing the leader (round {round})"
        );
        println!(
            "round {round}: new reconciler acting {:?} after kill",
            killed_at.elapsed()
        );
        relays[leader] = StrataProcess::spawn(&env, &format!("failover-r{round}"), &[], None)?;
    }
    sampler_cancel.cancel();
    sampler.await??;
    assert_eq!(
        max_holders.load(Ordering::Relaxed),
        1,
        "never two reconcilers at once"
    );
    let terms: i64 = hot
        .query_one(
            "SELECT count(DISTINCT holder) FROM strata.reconciler_terms WHERE source_name = 'main'",
            &[],
        )
        .await?
        .get(0);
    assert!(
        terms >= 4,
        "each round elected a new holder ({terms} terms)"
    );
    Ok(())
}

/// The reconciler re-sends rows stuck longer than reconcile_after when
/// nothing else wakes the workers (here: no notification and a 1 h poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_resends_stuck_rows() -> anyhow::Result<()> {
    const WORKERS: i64 = 2;
    let env = TestEnv::new("resend").await?;
    let _relay = StrataProcess::spawn(
        &env,
        "resend",
        &[
            ("relay.poll_interval", "1h"),
            ("relay.reconcile_after", "1s"),
            ("relay.workers_per_source", "2"),
        ],
        None,
    )?;
    let hot = env.hot().await?;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            hot.query_opt(
                "SELECT 1 FROM strata.reconciler_status WHERE last_pass_at IS NOT NULL",
                &[],
            )
            .await
            .map(|r| r.is_some())
            .unwrap_or(false)
        })
        .await
    );
    // The listener's first wake-up (after LISTEN) must be over before the
    // rows go in, or a worker would ship them instead of the reconciler:
    // wait until the listener is past its wake-up (its first lag sample
    // follows it) and every worker session ended a claim pass after the
    // listener connected, then a little more.
    // A bare sleep lost this race on a loaded machine.
    let source = env.source().await?;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            source
                .query_one(
                    "SELECT count(*) FILTER (WHERE w.state = 'idle' \
                                             AND (w.query IN ('COMMIT', 'ROLLBACK') \
                                                  OR w.query LIKE 'ANALYZE%') \
                                             AND w.state_change > l.backend_start), \
                            count(*) \
                     FROM pg_stat_activity w, \
                          (SELECT backend_start FROM pg_stat_activity \
                           WHERE application_name = $2 AND datname = current_database() \
                             AND query LIKE 'SELECT coalesce((SELECT extract(epoch%') l \
                     WHERE w.application_name = $1 AND w.datname = current_database()",
                    &[&WORKER_APPLICATION_NAME, &LISTENER_APPLICATION_NAME],
                )
                .await
                .map(|r| {
                    let (settled, workers): (i64, i64) = (r.get(0), r.get(1));
                    workers == WORKERS && settled == workers
                })
                .unwrap_or(false)
        })
        .await,
        "the relay's workers did not settle after the listener's wake-up"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    source
        .batch_execute(
            "INSERT INTO strata_outbox.events (user_id, kind, source, payload) \
             SELECT 'stuck-' || g, 'login', 'by-hand', '{}' FROM generate_series(1, 25) g",
        )
        .await?;
    let resent = wait_until(Duration::from_secs(10), || async {
        env.hot_len().await.unwrap_or(0) == 25
    })
    .await;
    assert!(resent, "stuck rows were not re-sent");
    let total: i64 = hot
        .query_one(
            "SELECT resent_total FROM strata.reconciler_status WHERE source_name = 'main'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        total, 25,
        "rows shipped by the reconciler, not by woken workers"
    );
    Ok(())
}

/// Test 6: poison rows inserted by hand go to the dead-letter table with
/// their reason; the rows around them keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_rows_are_dead_lettered_and_never_block() -> anyhow::Result<()> {
    let env = TestEnv::new("poison").await?;
    let source = env.source().await?;
    source
        .batch_execute(&format!(
            "INSERT INTO strata_outbox.events (user_id, kind, source, payload) VALUES
               ('good-1', 'login', 'hand', '{{\"ok\": 1}}'),
               ('bad-array', 'login', 'hand', '[1, 2]'),
               ('bad-string', 'login', 'hand', '\"text\"'),
               ('', 'login', 'hand', '{{}}'),
               ('{long}', 'login', 'hand', '{{}}'),
               ('bad-kind', 'Not A Kind', 'hand', '{{}}'),
               ('bad-size', 'login', 'hand', jsonb_build_object('blob', repeat('y', 3000))),
               ('bad-source', 'login', '', '{{}}'),
               ('good-2', 'deposit', 'hand', '{{\"amount\": \"1.00\"}}')",
            long = "u".repeat(300)
        ))
        .await?;
    let _relay =
        StrataProcess::spawn(&env, "poison", &[("relay.max_payload_bytes", "2048")], None)?;
    let ledger_free = wait_until(Duration::from_secs(10), || async {
        env.outbox_len().await.unwrap_or(-1) == 0
    })
    .await;
    assert!(ledger_free, "outbox not drained");
    let hot = env.hot().await?;
    let good: Vec<String> = hot
        .query("SELECT user_id FROM strata.activity ORDER BY user_id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(good, vec!["good-1", "good-2"]);
    let dead: Vec<(String, String, String)> = hot
        .query(
            "SELECT left(user_id, 12), reason_code, reason FROM strata.dead_letters ORDER BY outbox_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let codes: Vec<(&str, &str)> = dead
        .iter()
        .map(|(u, c, _)| (u.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("bad-array", "payload_not_object"),
            ("bad-string", "payload_not_object"),
            ("", "empty_user_id"),
            ("uuuuuuuuuuuu", "user_id_too_long"),
            ("bad-kind", "invalid_kind"),
            ("bad-size", "payload_too_large"),
            ("bad-source", "invalid_source"),
        ]
    );
    assert!(dead.iter().all(|(_, _, reason)| !reason.is_empty()));
    let payload: String = hot
        .query_one(
            "SELECT payload FROM strata.dead_letters WHERE user_id = 'bad-array'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(payload, "[1, 2]", "poison rows are kept verbatim");
    Ok(())
}

/// A large batch (the COPY path) crashes right after its hot commit; the
/// re-shipped batch finds its events already stored, falls back to
/// ON CONFLICT DO NOTHING, and nothing is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batch_reshipped_after_crash_is_stored_once() -> anyhow::Result<()> {
    let env = TestEnv::new("bigbatch").await?;
    let outbox = Outbox::new("bigbatch")?;
    let ledger = Ledger::default();
    let mut source = env.source().await?;
    for round in 0..3 {
        let events: Vec<NewEvent> = (0..500)
            .map(|i| {
                NewEvent::new(format!("big-{}", i % 37), "trade")
                    .payload(json!({"round": round, "i": i}))
            })
            .collect();
        let prepared = outbox.prepare(&events)?;
        let fixed: Vec<NewEvent> = prepared
            .iter()
            .zip(&events)
            .map(|(p, e)| e.clone().event_id(p.event_id).occurred_at(p.occurred_at))
            .collect();
        let tx = source.transaction().await?;
        outbox.enqueue_many_pg(&tx, &fixed).await?;
        tx.commit().await?;
        let entries: Vec<_> = prepared
            .iter()
            .map(strata_tests::ledger::LedgerEvent::from)
            .collect();
        ledger.record(&entries, Outcome::Committed);
    }
    let big = [
        ("relay.batch_size", "600"),
        ("relay.workers_per_source", "1"),
    ];
    let mut armed = StrataProcess::spawn(&env, "bigbatch-armed", &big, Some("after_hot_commit=1"))?;
    let status = armed.wait_exit(Duration::from_secs(20)).await;
    assert!(
        matches!(status, Some(s) if !s.success()),
        "{status:?}\n{}",
        armed.log_tail()
    );
    assert_eq!(
        env.hot_len().await?,
        600,
        "the crashed batch was committed to the hot store"
    );
    assert_eq!(env.outbox_len().await?, 1500, "and is still in the outbox");
    let relay = StrataProcess::spawn(&env, "bigbatch", &big, None)?;
    drained_and_clean(&env, &ledger, Duration::from_secs(15)).await?;
    let log = std::fs::read_to_string(&relay.log_path)?;
    assert!(
        log.contains("already stored"),
        "the re-shipped batch took the fallback"
    );
    Ok(())
}

/// A retried business operation that re-enqueues the same event (same
/// event_id and occurred_at) is stored once, whether the retry lands in the
/// same batch or a later one (the COPY fast path falls back to
/// ON CONFLICT DO NOTHING).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_operation_with_the_same_event_id_is_stored_once() -> anyhow::Result<()> {
    let env = TestEnv::new("idem").await?;
    let outbox = Outbox::new("idem")?;
    let at = Utc::now().trunc_subsecs(6);
    let events: Vec<NewEvent> = (0..20)
        .map(|i| {
            NewEvent::new(format!("idem-{i}"), "deposit")
                .event_id(Uuid::now_v7())
                .occurred_at(at)
                .payload(json!({"attempt": 1}))
        })
        .collect();
    let mut source = env.source().await?;
    // Same batch: two copies of the first five.
    let tx = source.transaction().await?;
    outbox.enqueue_many_pg(&tx, &events).await?;
    outbox.enqueue_many_pg(&tx, &events[..5]).await?;
    tx.commit().await?;
    let mut relay = StrataProcess::spawn(&env, "idem", &[], None)?;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            env.outbox_len().await.unwrap_or(-1) == 0
        })
        .await
    );
    // A later batch: the retry arrives after the original was shipped.
    let tx = source.transaction().await?;
    outbox.enqueue_many_pg(&tx, &events[10..]).await?;
    outbox
        .enqueue_pg(&tx, &NewEvent::new("idem-new", "login"))
        .await?;
    tx.commit().await?;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            env.outbox_len().await.unwrap_or(-1) == 0
        })
        .await
    );
    assert_eq!(env.hot_len().await?, 21, "{}", relay.log_tail());
    relay.kill9();
    Ok(())
}

/// Test 7: events around midnight UTC land in their own day; events for
/// days with no partition (far past, far future) get one and are kept,
/// once the accepted window (SDK and relay alike) is widened to hold them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn midnight_and_partitionless_days() -> anyhow::Result<()> {
    let env = TestEnv::new("midnight").await?;
    let times = [
        Utc.with_ymd_and_hms(2021, 3, 14, 23, 59, 59)
            .single()
            .expect("t")
            + chrono::Duration::microseconds(999_999),
        Utc.with_ymd_and_hms(2021, 3, 15, 0, 0, 0)
            .single()
            .expect("t"),
        Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59)
            .single()
            .expect("t"),
        Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0)
            .single()
            .expect("t"),
    ];
    let expected_partitions = [
        "activity_20210314",
        "activity_20210315",
        "activity_19991231",
        "activity_20990101",
    ];
    let wide = strata_producer::EventLimits {
        accept_past: Duration::from_secs(36_500 * 86_400),
        accept_future: Duration::from_secs(36_500 * 86_400),
        ..Default::default()
    };
    let outbox = Outbox::new("midnight")?.with_limits(wide);
    let mut source = env.source().await?;
    let tx = source.transaction().await?;
    let mut ids = Vec::new();
    for (i, at) in times.iter().enumerate() {
        ids.push(
            outbox
                .enqueue_pg(
                    &tx,
                    &NewEvent::new("night-owl", "login")
                        .occurred_at(*at)
                        .payload(json!({"i": i})),
                )
                .await?,
        );
    }
    tx.commit().await?;
    let _relay = StrataProcess::spawn(
        &env,
        "midnight",
        &[
            ("relay.accept_past", "36500d"),
            ("relay.accept_future", "36500d"),
        ],
        None,
    )?;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            env.hot_len().await.unwrap_or(0) == 4
        })
        .await
    );
    let hot = env.hot().await?;
    for ((id, at), partition) in ids.iter().zip(times).zip(expected_partitions) {
        let row = hot
            .query_one(
                "SELECT (SELECT relname::text FROM pg_class WHERE oid = a.tableoid), occurred_at \
                 FROM strata.activity a WHERE event_id = $1",
                &[id],
            )
            .await?;
        assert_eq!(row.get::<_, String>(0), partition);
        assert_eq!(row.get::<_, chrono::DateTime<Utc>>(1), at);
    }
    Ok(())
}

/// Test 8: the hot store goes down for 10 s under load, then comes back:
/// the outbox buffers, nothing is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_store_down_for_ten_seconds() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("strata-test-hot-{}", Uuid::new_v4().simple()));
    let mut cluster = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || strata_embedded::Cluster::start(strata_embedded::ClusterOptions::new(dir))
    })
    .await??;
    let admin = strata_tests::connect(&cluster.url("postgres")).await?;
    admin.batch_execute("CREATE DATABASE hot").await?;
    let base = strata_tests::db::base_url()?;
    let source_url = strata_tests::db::create_database(&base, "hotdown_src").await?;
    let env = TestEnv::with_urls(source_url, cluster.url("hot")).await?;
    let _relay = StrataProcess::spawn(&env, "hotdown", &[], None)?;
    let ledger = Ledger::default();
    let cancel = CancellationToken::new();
    let tasks = load::start(
        &env.source_url,
        ledger.clone(),
        LoadOptions::default(),
        cancel.clone(),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster =
        tokio::task::spawn_blocking(move || cluster.stop_with(true).map(|()| cluster)).await??;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let buffered = env.outbox_len().await?;
    assert!(
        buffered > 50,
        "the outbox buffers while the hot store is down ({buffered} rows)"
    );
    cluster = tokio::task::spawn_blocking(move || cluster.restart().map(|()| cluster)).await??;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load::stop(cancel, tasks).await;
    drained_and_clean(&env, &ledger, Duration::from_secs(30)).await?;
    drop(cluster);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// (epoch, holder, acted since elected) of the source's reconciler.
async fn status(hot: &tokio_postgres::Client) -> Option<(i64, String, bool)> {
    hot.query_opt(
        "SELECT epoch, holder, coalesce(last_pass_at > elected_at, false) \
         FROM strata.reconciler_status WHERE source_name = 'main'",
        &[],
    )
    .await
    .ok()
    .flatten()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// A source database goes down under load and comes back: producers see
/// failures (some commits with unknown outcome), the relay reconnects and
/// re-LISTENs, and every committed event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_down_and_back() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("strata-test-src-{}", Uuid::new_v4().simple()));
    let mut cluster = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || strata_embedded::Cluster::start(strata_embedded::ClusterOptions::new(dir))
    })
    .await??;
    let admin = strata_tests::connect(&cluster.url("postgres")).await?;
    admin.batch_execute("CREATE DATABASE src").await?;
    let base = strata_tests::db::base_url()?;
    let hot_url = strata_tests::db::create_database(&base, "srcdown_hot").await?;
    let env = TestEnv::with_urls(cluster.url("src"), hot_url).await?;
    let _relay = StrataProcess::spawn(&env, "srcdown", &[], None)?;
    let ledger = Ledger::default();
    let cancel = CancellationToken::new();
    let tasks = load::start(
        &env.source_url,
        ledger.clone(),
        LoadOptions::default(),
        cancel.clone(),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster =
        tokio::task::spawn_blocking(move || cluster.stop_with(true).map(|()| cluster)).await??;
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster = tokio::task::spawn_blocking(move || cluster.restart().map(|()| cluster)).await??;
    let before = ledger.count(Outcome::Committed);
    // Producers reconnect and commit again.
    assert!(
        wait_until(Duration::from_secs(15), || async {
            ledger.count(Outcome::Committed) > before + 100
        })
        .await,
        "producers did not resume"
    );
    load::stop(cancel, tasks).await;
    drained_and_clean(&env, &ledger, Duration::from_secs(30)).await?;
    drop(cluster);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
