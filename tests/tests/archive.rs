//! The archiver against the real Postgres and the real S3 server (moto)
//! the test command started: end to end with an independent reader, crash
//! at every step, S3 outage, two archivers and a paused leader, corrupted
//! uploads, late events, day boundaries.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rand::Rng;
use serde_json::json;
use strata_archive::ArchivedRow;
use strata_producer::{NewEvent, Outbox};
use strata_tests::archive::{
    archived_rows, boto3, create_bucket, day_catalog, hot_rows, python_read, run_archive,
    spawn_archiver, DayCatalog, MotoServer, S3Target,
};
use strata_tests::{http_get, metric_value, wait_until, StrataProcess, TestEnv};

pub(crate) const KINDS: [&str; 5] = [
    "login",
    "deposit",
    "withdrawal",
    "2fa_reset",
    "password_change",
];

/// A closed day `days_ago` days back (UTC).
pub(crate) fn past_day(days_ago: i64) -> NaiveDate {
    (Utc::now() - TimeDelta::days(days_ago)).date_naive()
}

pub(crate) fn at(day: NaiveDate, h: u32, m: u32, s: u32, micros: u32) -> DateTime<Utc> {
    day.and_hms_micro_opt(h, m, s, micros)
        .expect("valid time")
        .and_utc()
}

/// `count` events spread over `day` across 20 users, with payloads that
/// exercise JSON text (unicode, quotes, nesting, numbers).
pub(crate) fn events_for(day: NaiveDate, count: usize) -> Vec<NewEvent> {
    let mut rng = rand::thread_rng();
    (0..count)
        .map(|i| {
            let user = format!("user-{:03}", rng.gen_range(0..20));
            let kind = KINDS[i % KINDS.len()];
            let time = at(
                day,
                rng.gen_range(0..24),
                rng.gen_range(0..60),
                rng.gen_range(0..60),
                rng.gen_range(0..1_000_000),
            );
            let currency = ["EUR", "USD", "JPY"][i % 3];
            NewEvent::new(user, kind).occurred_at(time).payload(json!({
                "ip": format!("10.{}.{}.{}", rng.gen_range(0..255), rng.gen_range(0..255), i % 255),
                "amount": rng.gen_range(1..100_000) as f64 / 100.0,
                "currency": currency,
                "note": format!("payé «{i}» \"quoted\" \\ back"),
                "device": {"id": format!("d-{}", rng.gen::<u32>()), "trusted": i % 2 == 0},
            }))
        })
        .collect()
}

/// Writes `events` through the SDK in transactions of 50.
pub(crate) async fn produce(env: &TestEnv, events: &[NewEvent]) -> anyhow::Result<()> {
    let mut client = env.source().await?;
    let outbox = Outbox::new("archive-test")?;
    for chunk in events.chunks(50) {
        let tx = client.transaction().await?;
        outbox.enqueue_many_pg(&tx, chunk).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Runs a relay until the outbox is empty.
pub(crate) async fn ship(env: &TestEnv) -> anyhow::Result<()> {
    let mut relay = StrataProcess::spawn(env, "archive-relay", &[], None)?;
    let shipped = wait_until(Duration::from_secs(60), || async {
        env.outbox_len().await.map(|n| n == 0).unwrap_or(false)
    })
    .await;
    anyhow::ensure!(shipped, "relay did not ship: {}", relay.log_tail());
    relay.kill9();
    Ok(())
}

async fn produce_and_ship(env: &TestEnv, days: &[NaiveDate], per_day: usize) -> anyhow::Result<()> {
    let events: Vec<NewEvent> = days.iter().flat_map(|d| events_for(*d, per_day)).collect();
    produce(env, &events).await?;
    ship(env).await
}

async fn catalog(env: &TestEnv, day: NaiveDate) -> anyhow::Result<Option<DayCatalog>> {
    day_catalog(&env.hot().await?, day).await
}

/// Waits until `day` is committed and published.
async fn wait_committed(env: &TestEnv, day: NaiveDate, timeout: Duration) -> bool {
    wait_until(timeout, || async {
        matches!(catalog(env, day).await, Ok(Some(c)) if c.state == "committed" && c.published)
    })
    .await
}

pub(crate) async fn partition_exists(env: &TestEnv, day: NaiveDate) -> anyhow::Result<bool> {
    Ok(env
        .hot()
        .await?
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("strata.activity_{}", day.format("%Y%m%d"))],
        )
        .await?
        .get(0))
}

/// Keys under the day's data directory (files and manifest).
async fn day_objects(target: &S3Target, day: NaiveDate) -> anyhow::Result<HashSet<String>> {
    let dir = strata_archive::layout::day_dir(&target.prefix, day);
    Ok(target
        .store()
        .await?
        .list(&dir)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect())
}

/// Exactly one commit, its files (and the manifest) and nothing else at
/// the day's final keys, and the archive equal to `expected`.
async fn assert_one_clean_commit(
    env: &TestEnv,
    target: &S3Target,
    day: NaiveDate,
    expected: &[ArchivedRow],
) -> anyhow::Result<()> {
    let hot = env.hot().await?;
    let entry = day_catalog(&hot, day).await?.expect("catalog entry");
    assert_eq!(entry.state, "committed");
    assert!(entry.published);
    assert_eq!(entry.version, 1, "exactly one commit of {day}");
    let epochs: HashSet<i64> = entry.files.iter().map(|f| f.4).collect();
    assert_eq!(epochs.len(), 1, "files of one attempt: {:?}", entry.files);
    assert_eq!(entry.rows as usize, expected.len());
    let archived = archived_rows(&hot, target, day).await?;
    assert_rows_equal(&archived, expected, "own reader");
    let mut keys: HashSet<String> = entry.files.iter().map(|f| f.0.clone()).collect();
    keys.insert(strata_archive::layout::manifest_key(&target.prefix, day));
    assert_eq!(
        day_objects(target, day).await?,
        keys,
        "only committed files are data"
    );
    Ok(())
}

fn assert_rows_equal(actual: &[ArchivedRow], expected: &[ArchivedRow], reader: &str) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{reader}: {} rows, expected {}",
        actual.len(),
        expected.len()
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(a, e, "{reader}: row {i} differs");
    }
}

fn sorted(mut rows: Vec<ArchivedRow>) -> Vec<ArchivedRow> {
    rows.sort_by(|a, b| {
        (a.user_id.as_bytes(), a.occurred_at, a.event_id.as_bytes()).cmp(&(
            b.user_id.as_bytes(),
            b.occurred_at,
            b.event_id.as_bytes(),
        ))
    });
    rows
}

pub(crate) fn day_arg(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Tests 1 and 7: SDK -> relay -> archive; read back by our reader and by
/// pyarrow + DuckDB; events at 23:59:59.999999 and 00:00:00 in their days;
/// closure rule refusals; verify; idempotent re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_archive_reads_back_exactly() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_e2e").await?;
    let target = S3Target::new("e2e").await?;
    let (d1, d2) = (past_day(3), past_day(2));
    let mut events = events_for(d1, 300);
    events.extend(events_for(d2, 300));
    let last_of_d1 = at(d1, 23, 59, 59, 999_999);
    let first_of_d2 = at(d2, 0, 0, 0, 0);
    events.push(NewEvent::new("edge", "login").occurred_at(last_of_d1));
    events.push(NewEvent::new("edge", "logout").occurred_at(first_of_d2));
    produce(&env, &events).await?;

    // Unshipped events of the day: not archivable yet (closure rule).
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(d1)], &[], None).await?;
    assert!(!ok && output.contains("unshipped"), "{output}");
    // Today has not ended.
    let today = day_arg(Utc::now().date_naive());
    let (ok, output) = run_archive(&env, &target, &["--day", &today], &[], None).await?;
    assert!(!ok && output.contains("has not ended"), "{output}");
    assert!(
        catalog(&env, d1).await?.is_none(),
        "a refusal changes nothing"
    );

    ship(&env).await?;
    let hot = env.hot().await?;
    let expected1 = hot_rows(&hot, d1).await?;
    let expected2 = hot_rows(&hot, d2).await?;
    assert_eq!(expected1.len() + expected2.len(), events.len());
    let micros = |t: DateTime<Utc>| t.timestamp_micros();
    assert!(expected1
        .iter()
        .any(|r| r.user_id == "edge" && r.occurred_at == micros(last_of_d1)));
    assert!(expected2
        .iter()
        .any(|r| r.user_id == "edge" && r.occurred_at == micros(first_of_d2)));

    // Small files force a split: each file a contiguous user range.
    let small = [
        ("archiver.max_file_rows", "60"),
        ("archiver.row_group_rows", "1024"),
    ];
    for day in [d1, d2] {
        let (ok, output) =
            run_archive(&env, &target, &["--day", &day_arg(day)], &small, None).await?;
        assert!(ok && output.contains("committed"), "{output}");
    }
    for (day, expected) in [(d1, &expected1), (d2, &expected2)] {
        assert_one_clean_commit(&env, &target, day, expected).await?;
        let entry = catalog(&env, day).await?.expect("entry");
        assert!(entry.files.len() > 1, "a split day: {:?}", entry.files);
        let independent = python_read(&target, day).await?;
        assert_rows_equal(&independent.rows, expected, "pyarrow + DuckDB");
        assert_eq!(independent.files, entry.files.len());
        assert_eq!(independent.manifest_files, entry.files.len());
        assert!(
            independent.files_sorted,
            "each file sorted by (user_id, occurred_at, event_id)"
        );
        assert!(
            independent.users_disjoint,
            "one user's day lives in one file"
        );
        assert!(independent.statistics, "column statistics");
        assert!(independent.page_index, "page index");
        assert_eq!(independent.codecs, vec!["ZSTD".to_string()]);
    }

    // Re-running a committed day changes nothing.
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(d1)], &[], None).await?;
    assert!(ok && output.contains("already committed"), "{output}");
    assert_eq!(catalog(&env, d1).await?.expect("entry").version, 1);

    // Verify re-reads the day; a tampered object is reported.
    let (ok, output) = run_archive(
        &env,
        &target,
        &["--verify", "--day", &day_arg(d1)],
        &[],
        None,
    )
    .await?;
    assert!(ok && output.contains("OK"), "{output}");
    let entry = catalog(&env, d1).await?.expect("entry");
    let store = target.store().await?;
    store
        .put_bytes(&entry.files[0].0, b"not parquet at all".to_vec())
        .await?;
    let (ok, output) = run_archive(
        &env,
        &target,
        &["--verify", "--day", &day_arg(d1)],
        &[],
        None,
    )
    .await?;
    assert!(!ok && output.contains("verification of"), "{output}");
    Ok(())
}

/// Test 2: the continuous archiver aborted at `point`, then restarted:
/// one commit, nothing lost or duplicated, the partition never dropped
/// before the commit (and dropped after it, retention being 0 days).
async fn crash_then_restart(point: &str) -> anyhow::Result<()> {
    let env = TestEnv::new("arch_crash").await?;
    let target = S3Target::new("crash").await?;
    let day = past_day(2);
    produce_and_ship(&env, &[day], 400).await?;
    let expected = hot_rows(&env.hot().await?, day).await?;
    let settings = [
        ("archiver.hot_retention_days", "0"),
        ("archiver.max_file_rows", "150"),
    ];

    let failpoints = format!("{point}=1");
    let mut crashing = spawn_archiver(
        &env,
        &target,
        "archiver-crash",
        &settings,
        Some(&failpoints),
    )?;
    let status = crashing
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the failpoint must abort the archiver");
    assert!(!status.success(), "aborted at {point}");
    let entry = catalog(&env, day).await?;
    let committed = entry.as_ref().is_some_and(|e| e.state == "committed");
    let expect_committed = matches!(point, "archiver.after_commit" | "archiver.before_drop");
    assert_eq!(
        committed, expect_committed,
        "commit state after a crash at {point}"
    );
    assert!(
        partition_exists(&env, day).await?,
        "partition kept at {point}"
    );
    assert_eq!(
        hot_rows(&env.hot().await?, day).await?.len(),
        expected.len()
    );

    let mut archiver = spawn_archiver(&env, &target, "archiver-restart", &settings, None)?;
    // Dropped after the commit, and the crashed attempt's staged objects
    // collected as garbage (grace 0 s here).
    let staging = strata_archive::layout::staging_dir(&target.prefix);
    let store = target.store().await?;
    let done = wait_until(Duration::from_secs(60), || async {
        matches!(catalog(&env, day).await, Ok(Some(c)) if c.partition_dropped)
            && store.list(&staging).await.is_ok_and(|l| l.is_empty())
    })
    .await;
    assert!(done, "not archived after restart: {}", archiver.log_tail());
    archiver.kill9();
    assert!(!partition_exists(&env, day).await?);
    assert_one_clean_commit(&env, &target, day, &expected).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_local_write() -> anyhow::Result<()> {
    crash_then_restart("archiver.after_local_write").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_upload() -> anyhow::Result<()> {
    crash_then_restart("archiver.after_upload").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_commit() -> anyhow::Result<()> {
    crash_then_restart("archiver.before_commit").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_commit() -> anyhow::Result<()> {
    crash_then_restart("archiver.after_commit").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_partition_drop() -> anyhow::Result<()> {
    crash_then_restart("archiver.before_drop").await
}

/// Test 3: the S3 server dies while the archiver is about to upload and
/// comes back (empty: moto keeps state in memory) several seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_is_retried_and_the_day_commits_after_recovery() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_s3down").await?;
    let mut moto = MotoServer::start().await?;
    let target = S3Target::on(&moto.endpoint(), "outage").await?;
    let day = past_day(2);
    produce_and_ship(&env, &[day], 300).await?;
    let expected = hot_rows(&env.hot().await?, day).await?;

    let mut archiver = spawn_archiver(
        &env,
        &target,
        "archiver-s3down",
        &[],
        Some("archiver.after_local_write=sleep:1s"),
    )?;
    let about_to_upload = wait_until(Duration::from_secs(30), || async {
        std::fs::read_to_string(&archiver.log_path)
            .is_ok_and(|log| log.contains("failpoint archiver.after_local_write fired"))
    })
    .await;
    assert!(about_to_upload, "{}", archiver.log_tail());
    moto.stop();
    let retrying = wait_until(Duration::from_secs(30), || async {
        std::fs::read_to_string(&archiver.log_path)
            .is_ok_and(|log| log.matches("retrying").count() >= 3)
    })
    .await;
    assert!(retrying, "no retries: {}", archiver.log_tail());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(catalog(&env, day)
        .await?
        .is_none_or(|c| c.state != "committed"));
    assert_eq!(
        hot_rows(&env.hot().await?, day).await?,
        expected,
        "hot data stays"
    );

    moto.restart().await?;
    create_bucket(&target.endpoint, &target.bucket).await?;
    let committed = wait_committed(&env, day, Duration::from_secs(90)).await;
    assert!(
        committed,
        "not committed after recovery: {}",
        archiver.log_tail()
    );
    // Publication (the manifest) follows the commit in the same pass.
    let published = wait_until(Duration::from_secs(30), || async {
        day_objects(&target, day)
            .await
            .is_ok_and(|keys| keys.iter().any(|k| k.ends_with("_manifest.json")))
    })
    .await;
    assert!(published);
    archiver.kill9();
    assert_one_clean_commit(&env, &target, day, &expected).await
}

/// Test 4a: two archivers started together on the same days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_archivers_commit_each_day_once() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_two").await?;
    let target = S3Target::new("two").await?;
    let days = [past_day(4), past_day(3), past_day(2)];
    produce_and_ship(&env, &days, 150).await?;
    let hot = env.hot().await?;
    let mut expected = Vec::new();
    for day in days {
        expected.push(hot_rows(&hot, day).await?);
    }
    let ports = [strata_embedded::free_port()?, strata_embedded::free_port()?];
    let listen: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let mut a = spawn_archiver(
        &env,
        &target,
        "archiver-a",
        &[("metrics.listen", &listen[0])],
        None,
    )?;
    let mut b = spawn_archiver(
        &env,
        &target,
        "archiver-b",
        &[("metrics.listen", &listen[1])],
        None,
    )?;
    for day in days {
        assert!(
            wait_committed(&env, day, Duration::from_secs(60)).await,
            "{day} not committed:\n{}\n{}",
            a.log_tail(),
            b.log_tail()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The metrics agree: one leader, one commit per day between the two.
    let mut commits = 0.0;
    let mut leaders = 0.0;
    for port in ports {
        let body = http_get(port, "/metrics").await?;
        commits += metric_value(&body, "strata_archiver_commits_total{origin=\"day\"}")
            .expect("commits metric");
        leaders += metric_value(&body, "strata_archiver_is_leader").expect("leader metric");
        assert_eq!(
            metric_value(&body, "strata_archiver_verification_failures_total"),
            Some(0.0)
        );
        assert_eq!(
            metric_value(&body, "strata_archiver_days_pending"),
            Some(0.0)
        );
    }
    // Every committed day once (the relay's empty partitions of other
    // closed days, such as yesterday's, are archived too).
    let committed_days: i64 = env
        .hot()
        .await?
        .query_one(
            "SELECT count(*) FROM strata.archive_days WHERE state = 'committed'",
            &[],
        )
        .await?
        .get(0);
    assert!(committed_days >= 3);
    assert_eq!(commits, committed_days as f64);
    assert_eq!(leaders, 1.0);
    a.kill9();
    b.kill9();
    for (day, rows) in days.iter().zip(&expected) {
        assert_one_clean_commit(&env, &target, *day, rows).await?;
    }
    Ok(())
}

/// Test 4b: a leader paused (SIGSTOP) just before its commit loses the
/// lease; another archiver takes over and commits; the resumed leader is
/// fenced and commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_cannot_commit_after_takeover() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_pause").await?;
    let target = S3Target::new("pause").await?;
    let day = past_day(2);
    produce_and_ship(&env, &[day], 200).await?;
    let expected = hot_rows(&env.hot().await?, day).await?;
    let short_lease = [("archiver.lease_ttl", "2s")];

    let mut leader = spawn_archiver(
        &env,
        &target,
        "archiver-paused",
        &short_lease,
        Some("archiver.before_commit=sleep:2s"),
    )?;
    let at_commit = wait_until(Duration::from_secs(30), || async {
        std::fs::read_to_string(&leader.log_path)
            .is_ok_and(|log| log.contains("failpoint archiver.before_commit fired"))
    })
    .await;
    assert!(at_commit, "{}", leader.log_tail());
    leader.signal("STOP")?;

    let mut successor = spawn_archiver(&env, &target, "archiver-successor", &short_lease, None)?;
    let committed = wait_committed(&env, day, Duration::from_secs(60)).await;
    assert!(
        committed,
        "successor did not commit: {}",
        successor.log_tail()
    );
    successor.kill9();
    let winner_epoch = catalog(&env, day).await?.expect("entry").files[0].4;

    leader.signal("CONT")?;
    let fenced = wait_until(Duration::from_secs(30), || async {
        std::fs::read_to_string(&leader.log_path)
            .is_ok_and(|log| log.contains("fenced") || log.contains("taken over"))
    })
    .await;
    assert!(
        fenced,
        "the paused leader was not fenced: {}",
        leader.log_tail()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    leader.kill9();
    let log = std::fs::read_to_string(&leader.log_path)?;
    assert!(
        !log.contains("archive commit"),
        "the stale leader committed: {log}"
    );
    assert_one_clean_commit(&env, &target, day, &expected).await?;
    assert_eq!(
        catalog(&env, day).await?.expect("entry").files[0].4,
        winner_epoch
    );
    Ok(())
}

/// Test 5: a corrupted or truncated upload fails verification and is never
/// committed; a clean run then commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_or_truncated_upload_is_never_committed() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_corrupt").await?;
    let target = S3Target::new("corrupt").await?;
    let day = past_day(2);
    produce_and_ship(&env, &[day], 300).await?;
    let expected = hot_rows(&env.hot().await?, day).await?;
    for fault in ["archiver.corrupt_upload=1", "archiver.truncate_upload=1"] {
        let (ok, output) =
            run_archive(&env, &target, &["--day", &day_arg(day)], &[], Some(fault)).await?;
        assert!(!ok, "{fault}: must fail: {output}");
        assert!(output.contains("verification of"), "{fault}: {output}");
        let entry = catalog(&env, day).await?.expect("sealed entry");
        assert_eq!(entry.state, "sealed", "{fault}");
        assert!(entry.files.is_empty(), "{fault}");
        assert!(day_objects(&target, day).await?.is_empty(), "{fault}");
    }
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(day)], &[], None).await?;
    assert!(ok, "{output}");
    assert_one_clean_commit(&env, &target, day, &expected).await
}

/// Test 6: late events for an archived day are kept and archived as extra
/// files, also after the day's partition was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_become_extra_files() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_late").await?;
    let target = S3Target::new("late").await?;
    let day = past_day(3);
    produce_and_ship(&env, &[day], 200).await?;
    let on_time = hot_rows(&env.hot().await?, day).await?;
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(day)], &[], None).await?;
    assert!(ok, "{output}");

    // A late event while the partition still exists.
    produce(
        &env,
        &[NewEvent::new("late-1", "login").occurred_at(at(day, 12, 0, 0, 1))],
    )
    .await?;
    ship(&env).await?;
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(day)], &[], None).await?;
    assert!(ok && output.contains("committed 1 late rows"), "{output}");
    let hot_now = hot_rows(&env.hot().await?, day).await?;
    assert_eq!(hot_now.len(), on_time.len() + 1);
    let mut expected = sorted(hot_now);
    let entry = catalog(&env, day).await?.expect("entry");
    assert_eq!(entry.version, 2);
    assert_eq!(entry.files.last().map(|f| f.1.as_str()), Some("late"));
    let archived = sorted(archived_rows(&env.hot().await?, &target, day).await?);
    assert_rows_equal(&archived, &expected, "own reader after a late file");

    // The partition is dropped (retention 0), then another late event.
    let mut archiver = spawn_archiver(
        &env,
        &target,
        "archiver-late",
        &[("archiver.hot_retention_days", "0")],
        None,
    )?;
    let dropped = wait_until(Duration::from_secs(60), || async {
        matches!(catalog(&env, day).await, Ok(Some(c)) if c.partition_dropped)
    })
    .await;
    assert!(dropped, "{}", archiver.log_tail());
    archiver.sigterm()?;
    assert!(archiver
        .wait_exit(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));
    produce(
        &env,
        &[NewEvent::new("late-2", "deposit")
            .occurred_at(at(day, 23, 59, 59, 999_999))
            .payload(json!({"amount": 12.5}))],
    )
    .await?;
    ship(&env).await?;
    let recreated = hot_rows(&env.hot().await?, day).await?;
    assert_eq!(
        recreated.len(),
        1,
        "the re-created partition holds the late event"
    );
    expected = sorted(expected.into_iter().chain(recreated).collect());
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(day)], &[], None).await?;
    assert!(ok && output.contains("committed 1 late rows"), "{output}");

    let entry = catalog(&env, day).await?.expect("entry");
    assert_eq!(entry.version, 3);
    assert_eq!(entry.rows as usize, expected.len());
    let archived = sorted(archived_rows(&env.hot().await?, &target, day).await?);
    assert_rows_equal(&archived, &expected, "own reader after the partition drop");
    let independent = python_read(&target, day).await?;
    assert_rows_equal(&independent.rows, &expected, "pyarrow + DuckDB");
    assert_eq!(independent.manifest_files, entry.files.len());
    let (ok, output) = run_archive(
        &env,
        &target,
        &["--verify", "--day", &day_arg(day)],
        &[],
        None,
    )
    .await?;
    assert!(ok, "{output}");
    Ok(())
}

/// Large files go up in parts (each with a checksum the server checks) and
/// read back equal; a multipart upload a crashed archiver left behind is
/// aborted by garbage collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_and_abandoned_upload_cleanup() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_multipart").await?;
    let target = S3Target::new("multipart").await?;
    let day = past_day(2);
    let hot = env.hot().await?;
    hot.execute("SELECT strata.ensure_day_partition($1)", &[&day])
        .await?;
    // 80k rows with hard-to-compress payloads: a file of several parts.
    hot.execute(
        "INSERT INTO strata.activity (event_id, user_id, kind, occurred_at, source, payload)
         SELECT gen_random_uuid(), 'user-' || (g % 997), 'login',
                $1::date + (g % 86400) * interval '1 second', 'bulk',
                jsonb_build_object('n', g, 'blob',
                    md5(random()::text) || md5(random()::text) || md5(random()::text) ||
                    md5(random()::text) || md5(random()::text) || md5(random()::text))
           FROM generate_series(1, 80000) g",
        &[&day],
    )
    .await?;
    let expected = hot_rows(&hot, day).await?;
    let five_mib = (5u64 << 20).to_string();
    let multipart = [
        ("object_store.multipart_threshold_bytes", five_mib.as_str()),
        ("object_store.part_size_bytes", five_mib.as_str()),
    ];
    let (ok, output) =
        run_archive(&env, &target, &["--day", &day_arg(day)], &multipart, None).await?;
    assert!(ok, "{output}");
    let store = target.store().await?;
    let entry = catalog(&env, day).await?.expect("entry");
    let size = store.size(&entry.files[0].0).await?;
    assert!(size > 5 << 20, "a multipart-sized file: {size} bytes");
    assert_one_clean_commit(&env, &target, day, &expected).await?;
    let independent = python_read(&target, day).await?;
    assert_rows_equal(&independent.rows, &expected, "pyarrow + DuckDB");

    // An upload left open in staging, as a crash mid-upload leaves it.
    let staging = strata_archive::layout::staging_dir(&target.prefix);
    boto3(
        &target,
        &format!(
            "c.create_multipart_upload(Bucket=B, Key={:?})",
            format!("{staging}abandoned.parquet")
        ),
    )
    .await?;
    let open_uploads = "print(len(c.list_multipart_uploads(Bucket=B).get('Uploads', [])))";
    assert_eq!(boto3(&target, open_uploads).await?, "1");
    let mut archiver = spawn_archiver(
        &env,
        &target,
        "archiver-gc",
        &[("object_store.abandoned_upload_after", "0s")],
        None,
    )?;
    let aborted = wait_until(Duration::from_secs(30), || async {
        boto3(&target, open_uploads).await.is_ok_and(|n| n == "0")
    })
    .await;
    archiver.kill9();
    assert!(
        aborted,
        "abandoned upload not aborted: {}",
        archiver.log_tail()
    );
    Ok(())
}

/// Every event of `user` in the hot store, oldest first.
pub(crate) async fn user_history(env: &TestEnv, user: &str) -> anyhow::Result<Vec<ArchivedRow>> {
    let rows = env
        .hot()
        .await?
        .query(
            "SELECT user_id, (extract(epoch FROM occurred_at) * 1000000)::int8, event_id, kind,
                    source, payload::text, (extract(epoch FROM ingested_at) * 1000000)::int8
               FROM strata.activity WHERE user_id = $1 ORDER BY occurred_at, event_id",
            &[&user],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ArchivedRow {
            user_id: r.get(0),
            occurred_at: r.get(1),
            event_id: r.get(2),
            kind: r.get(3),
            source: r.get(4),
            payload: r.get(5),
            ingested_at: r.get(6),
        })
        .collect())
}

/// Reads `query` page by page to its end.
async fn read_all(
    reader: &strata_api::HistoryReader,
    client: &mut tokio_postgres::Client,
    query: strata_api::Query,
) -> anyhow::Result<Vec<ArchivedRow>> {
    read_all_with(reader, client, query, &mut strata_api::ReadAhead::none()).await
}

/// Reads `query` page by page to its end, with a read-ahead (as exports do).
async fn read_all_with(
    reader: &strata_api::HistoryReader,
    client: &mut tokio_postgres::Client,
    mut query: strata_api::Query,
    ahead: &mut strata_api::ReadAhead,
) -> anyhow::Result<Vec<ArchivedRow>> {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let page = reader.page_with(client, &query, ahead).await?;
        assert!(page.events.len() <= query.limit);
        all.extend(page.events);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(all),
        }
    }
    anyhow::bail!("pagination did not end")
}

/// G3: a user's history read page by page across archived days (with a
/// late event not archived yet), hot days, and a day that is archived and
/// whose partition is dropped between two pages: every event exactly once,
/// in (occurred_at, event_id) order, ascending and descending, filtered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_across_hot_and_cold_without_gap_or_repeat() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_history").await?;
    let target = S3Target::new("history").await?;
    let (d5, d4, d3, d2) = (past_day(5), past_day(4), past_day(3), past_day(2));
    let mut events = Vec::new();
    for day in [d5, d4, d3, d2] {
        events.extend(events_for(day, 60));
        for i in 0..9u32 {
            events.push(
                NewEvent::new("alice", KINDS[i as usize % KINDS.len()])
                    .occurred_at(at(day, 1 + i, 0, 0, i))
                    .payload(json!({"i": i, "day": day.to_string()})),
            );
        }
    }
    // d5's file is written in row groups of 1,024 rows, and 1,020 rows of
    // users sorted before alice put her rows on both sides of the first
    // boundary: her pages of d5 read two row groups.
    for i in 0..1020u32 {
        events.push(
            NewEvent::new(format!("aaron-{i:04}"), "login").occurred_at(at(
                d5,
                i / 60,
                i % 60,
                0,
                0,
            )),
        );
    }
    // Same instant twice: event_id breaks the tie.
    let tie = at(d3, 12, 0, 0, 0);
    events.push(NewEvent::new("alice", "login").occurred_at(tie));
    events.push(NewEvent::new("alice", "logout").occurred_at(tie));
    events.push(NewEvent::new("alice", "login").occurred_at(Utc::now() - TimeDelta::minutes(5)));
    produce(&env, &events).await?;
    ship(&env).await?;
    for (day, rows) in [(d5, "1024"), (d4, "2048"), (d3, "2048")] {
        let (ok, output) = run_archive(
            &env,
            &target,
            &["--day", &day_arg(day)],
            &[("archiver.row_group_rows", rows)],
            None,
        )
        .await?;
        assert!(ok, "{output}");
    }
    // A late event of an archived day, captured but not archived yet.
    produce(
        &env,
        &[NewEvent::new("alice", "deposit").occurred_at(at(d4, 23, 30, 0, 0))],
    )
    .await?;
    ship(&env).await?;
    let expected = user_history(&env, "alice").await?;
    assert_eq!(expected.len(), 4 * 9 + 4);

    let reader = strata_api::HistoryReader::new(target.store().await?, target.prefix.clone());
    let mut client = env.hot().await?;
    let everything = strata_api::Query {
        user_id: "alice".into(),
        from_micros: at(d5, 0, 0, 0, 0).timestamp_micros() - 86_400_000_000,
        to_micros: (Utc::now() + TimeDelta::days(1)).timestamp_micros(),
        kinds: Vec::new(),
        descending: false,
        after: None,
        limit: 7,
    };
    assert_rows_equal(
        &read_all(&reader, &mut client, everything.clone()).await?,
        &expected,
        "ascending",
    );
    // An export's read-ahead returns the same pages and fetches each
    // archive file once (d5, d4, d3: one file each), where reading page by
    // page fetches a day again when it spans two pages.
    let gets = || {
        reader
            .cold()
            .stats()
            .gets
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // (Decoded rows are also kept across calls: clear them so each read
    // below counts the GETs of its own strategy.)
    reader.cold().clear_rows();
    let before = gets();
    read_all(&reader, &mut client, everything.clone()).await?;
    let paged_gets = gets() - before;
    for mut ahead in [
        strata_api::ReadAhead::new(4, 100_000),
        strata_api::ReadAhead::new(2, 100_000),
    ] {
        reader.cold().clear_rows();
        let before = gets();
        assert_rows_equal(
            &read_all_with(&reader, &mut client, everything.clone(), &mut ahead).await?,
            &expected,
            "ascending with read-ahead",
        );
        assert_eq!(gets() - before, 3, "each file once");
    }
    // Page by page, a day split over two pages comes from the reader's
    // row cache the second time (without it, this read made 4 GETs).
    assert_eq!(paged_gets, 3, "page by page, rows kept between calls");
    // Kept rows are bounded: with nothing kept between pages, a day split
    // over two pages is fetched again, and the rows are still right.
    let mut unkept = strata_api::ReadAhead::new(4, 0);
    assert_rows_equal(
        &read_all_with(&reader, &mut client, everything.clone(), &mut unkept).await?,
        &expected,
        "ascending with read-ahead, nothing kept",
    );
    let mut newest_first = expected.clone();
    newest_first.reverse();
    let descending = strata_api::Query {
        descending: true,
        limit: 5,
        ..everything.clone()
    };
    assert_rows_equal(
        &read_all(&reader, &mut client, descending).await?,
        &newest_first,
        "descending",
    );
    let logins: Vec<ArchivedRow> = expected
        .iter()
        .filter(|r| r.kind == "login")
        .cloned()
        .collect();
    let only_logins = strata_api::Query {
        kinds: vec!["login".into()],
        limit: 3,
        ..everything.clone()
    };
    assert_rows_equal(
        &read_all(&reader, &mut client, only_logins).await?,
        &logins,
        "kinds",
    );
    let (from, to) = (
        at(d4, 0, 0, 0, 0).timestamp_micros(),
        at(d3, 12, 0, 0, 0).timestamp_micros(),
    );
    let in_range: Vec<ArchivedRow> = expected
        .iter()
        .filter(|r| r.occurred_at >= from && r.occurred_at < to)
        .cloned()
        .collect();
    let ranged = strata_api::Query {
        from_micros: from,
        to_micros: to,
        limit: 4,
        ..everything.clone()
    };
    assert_rows_equal(
        &read_all(&reader, &mut client, ranged).await?,
        &in_range,
        "range",
    );
    // Range edges are exact: `from` inclusive, `to` exclusive, in both
    // orders and both tiers (the tie pair sits in an archived day, the
    // first event of d2 in a hot one).
    for instant in [
        tie.timestamp_micros(),
        at(d2, 1, 0, 0, 0).timestamp_micros(),
    ] {
        let at_instant: Vec<ArchivedRow> = expected
            .iter()
            .filter(|r| r.occurred_at == instant)
            .cloned()
            .collect();
        assert!(!at_instant.is_empty());
        for descending in [false, true] {
            let mut want = at_instant.clone();
            if descending {
                want.reverse();
            }
            let edge = strata_api::Query {
                from_micros: instant,
                to_micros: instant + 1,
                descending,
                limit: 1,
                ..everything.clone()
            };
            assert_rows_equal(
                &read_all(&reader, &mut client, edge.clone()).await?,
                &want,
                "one-microsecond range",
            );
            let before = strata_api::Query {
                from_micros: instant - 1_000_000,
                to_micros: instant,
                ..edge
            };
            assert!(read_all(&reader, &mut client, before)
                .await?
                .iter()
                .all(|r| r.occurred_at < instant));
        }
    }
    let nobody = strata_api::Query {
        user_id: "nobody".into(),
        ..everything.clone()
    };
    assert!(reader.page(&mut client, &nobody).await?.events.is_empty());

    // Ranged reads: a page inside one archived day costs one GET once the
    // file's footer is cached, two (footer + data) when it is not, even
    // though alice's rows of d5 are in two row groups.
    let one_day = strata_api::Query {
        from_micros: at(d5, 0, 0, 0, 0).timestamp_micros(),
        to_micros: at(d4, 0, 0, 0, 0).timestamp_micros(),
        limit: 5,
        ..everything.clone()
    };
    reader.cold().clear_cache();
    let before = gets();
    let cold_page = reader.page(&mut client, &one_day).await?;
    assert_eq!(cold_page.events.len(), 5);
    assert_eq!(gets() - before, 2, "cold cache: footer + data");
    reader.cold().clear_rows();
    let before = gets();
    let warm_page = reader.page(&mut client, &one_day).await?;
    assert_eq!(gets() - before, 1, "warm cache: one ranged GET");
    assert_eq!(warm_page.events, cold_page.events);
    // Read again: the user's decoded rows of that file are kept.
    let before = gets();
    let cached_page = reader.page(&mut client, &one_day).await?;
    assert_eq!(gets() - before, 0, "rows cached: no GET");
    assert_eq!(cached_page.events, cold_page.events);

    // The seam moves between pages: d2 is archived, then every archived
    // day's partition dropped, while a reader is half-way through.
    let mut query = strata_api::Query {
        limit: 10,
        ..everything.clone()
    };
    let mut seen = Vec::new();
    let first = reader.page(&mut client, &query).await?;
    seen.extend(first.events);
    query.after = first.next;
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(d2)], &[], None).await?;
    assert!(ok, "{output}");
    let second = reader.page(&mut client, &query).await?;
    seen.extend(second.events);
    query.after = second.next;
    let mut archiver = spawn_archiver(
        &env,
        &target,
        "archiver-history",
        &[("archiver.hot_retention_days", "0")],
        None,
    )?;
    let dropped = wait_until(Duration::from_secs(60), || async {
        let mut all = true;
        for day in [d5, d4, d3, d2] {
            all &= matches!(catalog(&env, day).await, Ok(Some(c)) if c.partition_dropped);
        }
        all
    })
    .await;
    archiver.sigterm()?;
    let _ = archiver.wait_exit(Duration::from_secs(30)).await;
    assert!(dropped, "{}", archiver.log_tail());
    seen.extend(read_all(&reader, &mut client, query).await?);
    assert_rows_equal(&seen, &expected, "across the moving seam");
    // And from scratch, with every past day cold now.
    assert_rows_equal(
        &read_all(&reader, &mut client, everything).await?,
        &expected,
        "all cold",
    );
    Ok(())
}

/// The code blocks README.md marks `<!-- run by the test suite: NAME -->`
/// (the block right after the marker), as written.
fn readme_block(name: &str) -> anyhow::Result<String> {
    let readme = include_str!("../../README.md");
    let marker = format!("<!-- run by the test suite: {name} -->");
    let after = readme
        .split_once(&marker)
        .with_context(|| format!("README.md has no block marked {marker}"))?
        .1;
    let fence = after
        .find("```")
        .context("no code block after the marker")?;
    let body = after[fence..].split_once('\n').context("fence line")?.1;
    let end = body.find("```").context("unterminated code block")?;
    Ok(body[..end].to_string())
}

/// Spark reads the archive: a day archived by Strata, copied into a local
/// archive layout, read by PySpark (partition discovery, `WHERE date =
/// ...`) gives the same rows in the same order as pyarrow + DuckDB and as
/// the hot store held; and README's DuckDB and PySpark blocks run as
/// written on that layout (DuckDB's first query counts the day's events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_reads_the_archive_and_readme_snippets_run() -> anyhow::Result<()> {
    let env = TestEnv::new("arch_spark").await?;
    let target = S3Target::new("spark").await?;
    let day = past_day(2);
    let events = events_for(day, 400);
    produce(&env, &events).await?;
    ship(&env).await?;
    let hot = hot_rows(&env.hot().await?, day).await?;
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(day)], &[], None).await?;
    assert!(ok, "{output}");

    let independent = python_read(&target, day).await?;
    assert_rows_equal(&independent.rows, &hot, "pyarrow + DuckDB");
    let root = tempfile::Builder::new()
        .prefix("strata-test-spark")
        .tempdir()?;
    let archive = root.path().join(".strata/archive");
    let files = strata_tests::archive::download_day(&target, day, &archive).await?;
    assert!(files >= 1);
    let spark = strata_tests::archive::spark_read(&archive, day).await?;
    assert_eq!(spark.len(), events.len());
    assert_rows_equal(&spark, &independent.rows, "Spark (same rows, same order)");

    // README's blocks, as written, from a folder holding .strata/archive.
    let python = std::env::var("STRATA_TEST_PYTHON")?;
    let duckdb = String::from(
        "import duckdb, json, sys\nsql = sys.stdin.read()\ncon = duckdb.connect()\nout = []\n\
         for statement in [s for s in sql.split(';') if s.strip()]:\n    \
         out.append([[str(v) for v in row] for row in con.sql(statement).fetchall()])\n\
         print(json.dumps(out))\n",
    );
    let run = |code: String, stdin: String| {
        let python = python.clone();
        let cwd = root.path().to_path_buf();
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new(python)
                .args(["-c", &code])
                .current_dir(cwd)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            if let Some(mut input) = child.stdin.take() {
                input.write_all(stdin.as_bytes()).await?;
            }
            let output = child.wait_with_output().await?;
            anyhow::ensure!(
                output.status.success(),
                "README block failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok::<String, anyhow::Error>(String::from_utf8_lossy(&output.stdout).into_owned())
        }
    };
    let results: Vec<Vec<Vec<String>>> =
        serde_json::from_str(&run(duckdb, readme_block("duckdb")?).await?)?;
    let counted: usize = results[0]
        .iter()
        .map(|row| row[2].parse::<usize>().unwrap_or(0))
        .sum();
    assert_eq!(counted, events.len(), "{:?}", results[0]);
    assert!(results[0].iter().all(|row| row[0] == day_arg(day)));
    let shown = run(readme_block("spark")?, String::new()).await?;
    assert!(shown.contains("occurred_at"), "{shown}");
    Ok(())
}

/// Issue 14, AWS: credentials from a profile's `credential_process` (no
/// key in the config or the environment), every archive object written
/// with SSE-KMS and the configured key id, and an SSO profile without a
/// login failing with an SSO error (the SSO provider is in the chain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_profiles_and_sse_kms() -> anyhow::Result<()> {
    const KMS_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/strata-test-key";
    let env = TestEnv::new("arch_aws").await?;
    let target = S3Target::new("aws-chain").await?;
    let day = past_day(2);
    produce_and_ship(&env, &[day], 50).await?;

    let dir = tempfile::Builder::new().prefix("strata-aws").tempdir()?;
    let called = dir.path().join("credential-process-called");
    let script = dir.path().join("credentials.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\necho '{{\"Version\": 1, \"AccessKeyId\": \"test\", \"SecretAccessKey\": \"test\"}}'\n",
            called.display()
        ),
    )?;
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile strata-process]\nregion = us-east-1\ncredential_process = sh {}\n\n\
             [profile strata-sso]\nsso_session = corp\nsso_account_id = 123456789012\n\
             sso_role_name = Archiver\nregion = us-east-1\n\n\
             [sso-session corp]\nsso_start_url = https://corp.example.com/start\nsso_region = us-east-1\n",
            script.display()
        ),
    )?;
    let missing_credentials = dir.path().join("no-credentials-file");
    let config_path = config.display().to_string();
    let credentials_path = missing_credentials.display().to_string();
    let settings = strata_tests::archive::archiver_settings(
        &target,
        &[
            ("object_store.access_key_id", ""),
            ("object_store.secret_access_key", ""),
            ("object_store.sse_kms_key_id", KMS_KEY),
        ],
    );
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let run = |profile: &'static str, name: &'static str| {
        let env_vars = [
            ("STRATA_HOT_STORE__URL", env.hot_url.as_str()),
            ("STRATA_SOURCES__MAIN__URL", env.source_url.as_str()),
            ("AWS_CONFIG_FILE", config_path.as_str()),
            ("AWS_SHARED_CREDENTIALS_FILE", credentials_path.as_str()),
            ("AWS_PROFILE", profile),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_SESSION_TOKEN", ""),
            // No instance metadata to fall back on here.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        let day = day_arg(day);
        let settings = settings.clone();
        async move {
            let mut process = StrataProcess::spawn_with_env(
                &["archive", "--day", &day],
                name,
                &env_vars,
                &settings,
                None,
            )?;
            let status = process
                .wait_exit(Duration::from_secs(120))
                .await
                .context("strata archive did not finish")?;
            let log = std::fs::read_to_string(&process.log_path).unwrap_or_default();
            anyhow::Ok((status.success(), log))
        }
    };

    // An SSO profile nobody logged in with: refused, saying why.
    let (ok, log) = run("strata-sso", "aws-sso").await?;
    assert!(!ok, "{log}");
    assert!(log.to_lowercase().contains("sso"), "{log}");
    assert!(
        !matches!(catalog(&env, day).await?, Some(c) if c.state == "committed"),
        "nothing committed"
    );

    // credential_process: archived, every object encrypted with the key.
    let (ok, log) = run("strata-process", "aws-process").await?;
    assert!(ok, "{log}");
    assert!(called.exists(), "credential_process never ran: {log}");
    assert!(
        matches!(catalog(&env, day).await?, Some(c) if c.state == "committed"),
        "{log}"
    );
    let encryption = boto3(
        &target,
        &format!(
            "import json\nout = []\nfor o in c.list_objects_v2(Bucket=B, Prefix={:?}).get('Contents', []):\n    \
             h = c.head_object(Bucket=B, Key=o['Key'])\n    \
             out.append([o['Key'], h.get('ServerSideEncryption'), h.get('SSEKMSKeyId')])\nprint(json.dumps(out))",
            target.prefix
        ),
    )
    .await?;
    let objects: Vec<(String, Option<String>, Option<String>)> = serde_json::from_str(&encryption)?;
    assert!(
        objects.iter().any(|(key, _, _)| key.ends_with(".parquet")),
        "{objects:?}"
    );
    for (key, sse, key_id) in &objects {
        assert_eq!(sse.as_deref(), Some("aws:kms"), "{key}");
        assert!(
            key_id
                .as_deref()
                .is_some_and(|id| id.contains("strata-test-key")),
            "{key}: {key_id:?}"
        );
    }
    Ok(())
}
