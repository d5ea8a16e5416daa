//! Operations: migrations under concurrency, start-up refusals, config.

use std::process::Command;
use std::time::Duration;

use strata_tests::process::strata_bin;
use strata_tests::{StrataProcess, TestEnv};

/// Concurrent `migrate` runs are safe and idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_are_safe() -> anyhow::Result<()> {
    let base = strata_tests::db::base_url()?;
    let hot = strata_tests::db::create_database(&base, "mig_hot").await?;
    let src = strata_tests::db::create_database(&base, "mig_src").await?;
    // All four start before any is waited for.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            Command::new(strata_bin())
                .arg("migrate")
                .env("STRATA_HOT_STORE__URL", &hot)
                .env("STRATA_SOURCES__MAIN__URL", &src)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for run in runs {
        let out = run.wait_with_output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let client = strata_tests::connect(&hot).await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM strata.schema_migrations", &[])
        .await?
        .get(0);
    assert_eq!(n, strata_migrations::STORE.migrations.len() as i64);
    Ok(())
}

/// Migrations of different databases at once race on the cluster-wide
/// `strata_reader` role; none of them may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_many_databases_share_the_reader_role() -> anyhow::Result<()> {
    let base = strata_tests::db::base_url()?;
    let mut urls = Vec::new();
    for _ in 0..8 {
        urls.push(strata_tests::db::create_database(&base, "mig_many").await?);
    }
    let admin = strata_tests::connect(&format!("{base}/postgres")).await?;
    // Make every run take the role's settings path again.
    let _ = admin
        .batch_execute("ALTER ROLE strata_reader RESET default_transaction_read_only")
        .await;
    let children: Vec<_> = urls
        .iter()
        .map(|url| {
            Command::new(strata_bin())
                .arg("migrate")
                .env("STRATA_HOT_STORE__URL", url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for child in children {
        let out = child.wait_with_output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read_only: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
             WHERE r.rolname = 'strata_reader' AND 'default_transaction_read_only=on' = ANY (s.setconfig))",
            &[],
        )
        .await?
        .get(0);
    assert!(read_only);
    Ok(())
}

/// The relay refuses a hot store with synchronous_commit=off unless told,
/// and refuses an unmigrated one with a message naming `strata migrate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_refuses_unsafe_or_unmigrated_hot_store() -> anyhow::Result<()> {
    let env = TestEnv::new("refuse").await?;
    let name = env
        .hot_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let admin =
        strata_tests::connect(&format!("{}/postgres", strata_tests::db::base_url()?)).await?;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
        ))
        .await?;
    let mut relay = StrataProcess::spawn(&env, "refuse", &[], None)?;
    let status = relay.wait_exit(Duration::from_secs(15)).await;
    assert!(matches!(status, Some(s) if !s.success()), "{status:?}");
    assert!(
        relay.log_tail().contains("synchronous_commit=off"),
        "{}",
        relay.log_tail()
    );

    let mut relay = StrataProcess::spawn(
        &env,
        "refuse-override",
        &[("hot_store.allow_unsafe_durability", "true")],
        None,
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(relay.is_running(), "{}", relay.log_tail());
    relay.kill9();

    let base = strata_tests::db::base_url()?;
    let bare = TestEnv {
        source_url: env.source_url.clone(),
        hot_url: strata_tests::db::create_database(&base, "bare").await?,
    };
    let mut relay = StrataProcess::spawn(&bare, "bare", &[], None)?;
    let status = relay.wait_exit(Duration::from_secs(15)).await;
    assert!(matches!(status, Some(s) if !s.success()), "{status:?}");
    assert!(
        relay.log_tail().contains("strata migrate"),
        "{}",
        relay.log_tail()
    );
    Ok(())
}

/// A bad configuration value is refused at start-up naming the key.
#[test]
fn bad_config_names_the_key() {
    let out = Command::new(strata_bin())
        .args(["relay", "--set", "relay.batch_size=0"])
        .output()
        .expect("run strata");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("relay.batch_size"), "{stderr}");
    let out = Command::new(strata_bin())
        .arg("relay")
        .env("STRATA_RELAY__POLL_INTERVAL", "soon")
        .output()
        .expect("run strata");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("poll_interval"), "{stderr}");
}

/// The example config parses and validates.
#[test]
fn example_config_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/strata.example.toml");
    let config = strata_core::Config::load(Some(&path), &[]).expect("example config is valid");
    assert!(config.hot_store.url.is_some());
    assert!(!config.sources.is_empty());
}

/// Issue 14, probes: `/readyz` answers 200 only when every part of the
/// role answers, and names each; an archiver pointed at a bucket that
/// does not exist exits at start-up saying so, unless told to wait (then
/// it stays up and `/readyz` says the object store is down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_each_part_and_a_wrong_bucket_stops_the_archiver() -> anyhow::Result<()> {
    use strata_tests::api::free_port;
    use strata_tests::archive::{spawn_archiver, S3Target};
    use strata_tests::{http_get, wait_until};

    let env = TestEnv::new("readyz").await?;
    let port = free_port()?;
    let listen = format!("\"127.0.0.1:{port}\"");
    let _relay = StrataProcess::spawn(&env, "readyz-relay", &[("metrics.listen", &listen)], None)?;
    let ready = wait_until(Duration::from_secs(30), || async {
        http_get(port, "/readyz")
            .await
            .map(|r| r.starts_with("HTTP/1.1 200"))
            .unwrap_or(false)
    })
    .await;
    let body = http_get(port, "/readyz").await.unwrap_or_default();
    assert!(ready, "{body}");
    assert!(
        body.contains("ok hot store") && body.contains("ok source main"),
        "{body}"
    );
    let metrics = http_get(port, "/metrics").await?;
    assert!(
        metrics.contains("strata_build_info{role=\"relay\",version=\""),
        "{metrics}"
    );

    // A source that does not answer: alive (/healthz), not ready.
    let port = free_port()?;
    let listen = format!("\"127.0.0.1:{port}\"");
    let dead = TestEnv {
        source_url: format!("postgres://strata@127.0.0.1:{}/none", free_port()?),
        hot_url: env.hot_url.clone(),
    };
    let _relay = StrataProcess::spawn(&dead, "readyz-dead", &[("metrics.listen", &listen)], None)?;
    let not_ready = wait_until(Duration::from_secs(30), || async {
        http_get(port, "/readyz")
            .await
            .map(|r| r.starts_with("HTTP/1.1 503") && r.contains("down source main: "))
            .unwrap_or(false)
    })
    .await;
    let body = http_get(port, "/readyz").await.unwrap_or_default();
    assert!(not_ready, "{body}");
    assert!(body.contains("ok hot store"), "{body}");
    assert!(http_get(port, "/healthz")
        .await?
        .starts_with("HTTP/1.1 200"));

    // A bucket that does not exist: the archiver exits, naming it.
    let target = S3Target::new("readyz").await?;
    let missing = format!("\"strata-missing-{port}\"");
    let mut archiver = spawn_archiver(
        &env,
        &target,
        "readyz-nobucket",
        &[("object_store.bucket", &missing)],
        None,
    )?;
    let status = archiver.wait_exit(Duration::from_secs(60)).await;
    let log = std::fs::read_to_string(&archiver.log_path).unwrap_or_default();
    assert!(matches!(status, Some(s) if !s.success()), "{log}");
    assert!(
        log.contains(&format!("strata-missing-{port}")) && log.contains("wait_for_object_store"),
        "{log}"
    );
    // Told to wait, it stays up and is not ready.
    let port = free_port()?;
    let listen = format!("\"127.0.0.1:{port}\"");
    let mut waiting = spawn_archiver(
        &env,
        &target,
        "readyz-waiting",
        &[
            ("object_store.bucket", &missing),
            ("archiver.wait_for_object_store", "true"),
            ("metrics.listen", &listen),
        ],
        None,
    )?;
    let down = wait_until(Duration::from_secs(30), || async {
        http_get(port, "/readyz")
            .await
            .map(|r| r.starts_with("HTTP/1.1 503") && r.contains("down object store"))
            .unwrap_or(false)
    })
    .await;
    assert!(down && waiting.is_running(), "{}", waiting.log_tail());
    waiting.kill9();
    Ok(())
}

/// Issue 14, probes: the API's gRPC health is SERVING while its database
/// answers and NOT_SERVING while it does not (a private cluster stopped
/// and started again under a running `strata api`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_the_api_database() -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let root = tempfile::Builder::new()
        .prefix("strata-test-health")
        .tempdir()?;
    let dir = root.path().join("pg");
    let mut cluster = tokio::task::spawn_blocking(move || {
        strata_embedded::Cluster::start(strata_embedded::ClusterOptions::new(dir))
    })
    .await??;
    strata_tests::connect(&cluster.url("postgres"))
        .await?
        .batch_execute("CREATE DATABASE hot")
        .await?;
    let env = TestEnv::with_urls(cluster.url("hot"), cluster.url("hot")).await?;
    let target = strata_tests::archive::S3Target::new("health").await?;
    let api = strata_tests::api::ApiServer::start(&env, &target, "health-api", &[]).await?;
    let status = |name: &'static str| {
        let endpoint = api.endpoint.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)
                .ok()?
                .connect()
                .await
                .ok()?;
            let mut client = HealthClient::new(channel);
            let response = client
                .check(HealthCheckRequest {
                    service: name.to_string(),
                })
                .await
                .ok()?;
            Some(response.into_inner().status)
        }
    };
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    assert_eq!(status("").await, Some(serving));
    assert_eq!(status("strata.v1.HistoryService").await, Some(serving));

    tokio::task::block_in_place(|| cluster.stop())?;
    let down = strata_tests::wait_until(Duration::from_secs(20), || async {
        status("").await == Some(not_serving)
    })
    .await;
    assert!(down, "health still {:?}", status("").await);
    assert_eq!(status("strata.v1.HistoryService").await, Some(not_serving));

    tokio::task::block_in_place(|| cluster.restart())?;
    let up = strata_tests::wait_until(Duration::from_secs(30), || async {
        status("").await == Some(serving)
    })
    .await;
    assert!(up, "health still {:?}", status("").await);
    Ok(())
}
