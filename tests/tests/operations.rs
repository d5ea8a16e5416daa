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

/// Runs `strata demo --stop --dir <dir>` when dropped.
struct StopDemoCluster(String);

impl Drop for StopDemoCluster {
    fn drop(&mut self) {
        let _ = Command::new(strata_bin())
            .args(["demo", "--stop", "--dir", &self.0])
            .output();
    }
}

/// The lines `strata demo` prints for a user to paste, run as printed (the
/// venv's Python for `python3`; DuckDB's SQL through its Python module, as
/// the CLI is not installed; grpcurl, not installable here, only checked
/// for the address and method): README's first command, end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_the_commands_it_prints_work() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let python = std::env::var("STRATA_TEST_PYTHON")
        .map_err(|_| anyhow::anyhow!("STRATA_TEST_PYTHON is not set: run scripts/test"))?;
    let root = tempfile::Builder::new().prefix("strata-demo").tempdir()?;
    let dir = root.path().join("cluster");
    let dir_arg = dir.display().to_string();
    // The demo leaves its cluster running: stopped however the test ends
    // (dropped before `root`, the folder the cluster lives in).
    let _stop_cluster = StopDemoCluster(dir_arg.clone());
    let mut demo = tokio::process::Command::new(strata_bin())
        .args([
            "demo",
            "--dir",
            &dir_arg,
            "--duration",
            "3s",
            "--rate",
            "100",
            "--users",
            "20",
            "--backfill-days",
            "1",
            "--backfill-events",
            "300",
            "--api-for",
            "30s",
        ])
        .env_remove("STRATA_HOT_STORE__URL")
        .env_remove("STRATA_SOURCES__MAIN__URL")
        // Any free port (the demo prints the one it got), not 50051, which
        // a developer's own demo may hold.
        .env("STRATA_API__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = demo
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(line) = lines.next_line().await? {
            let done = line.starts_with("Serving for");
            printed.push(line);
            if done {
                break;
            }
        }
        anyhow::Ok(())
    })
    .await;
    let transcript = printed.join("\n");
    anyhow::ensure!(
        matches!(read, Ok(Ok(()))) && transcript.contains("Serving for"),
        "the demo did not reach its API: {transcript}"
    );
    // The rest of its output, until it exits (after --api-for).
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });

    let pasted = |prefix: &str| {
        printed
            .iter()
            .map(|line| line.trim_start())
            .filter(|line| line.starts_with(prefix))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Python, in a folder where `proto` is the repository's.
    let work = root.path().join("client");
    std::fs::create_dir_all(&work)?;
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    std::os::unix::fs::symlink(&proto, work.join("proto"))?;
    let python_lines = pasted("python3 ");
    assert_eq!(python_lines.len(), 2, "{transcript}");
    let mut last_output = String::new();
    for line in &python_lines {
        let command = format!("{} {}", python, line.trim_start_matches("python3 "));
        let out = tokio::process::Command::new("sh")
            .args(["-c", &command])
            .current_dir(&work)
            .output()
            .await?;
        assert!(
            out.status.success(),
            "{line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last_output = String::from_utf8_lossy(&out.stdout).to_string();
    }
    assert_eq!(
        last_output.matches("events {").count(),
        5,
        "ListActivity(page_size=5) from the printed line: {last_output}"
    );
    // grpcurl: the address the API serves and the method's full name.
    let grpcurl = pasted("grpcurl ");
    assert_eq!(grpcurl.len(), 1, "{transcript}");
    assert!(
        grpcurl[0].contains("strata.v1.HistoryService/ListActivity"),
        "{}",
        grpcurl[0]
    );
    // DuckDB: the printed SQL over the printed archive folder.
    let duckdb = pasted("duckdb -c ");
    assert_eq!(duckdb.len(), 1, "{transcript}");
    let sql = duckdb[0]
        .trim_start_matches("duckdb -c \"")
        .trim_end_matches('"');
    let out = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import duckdb, sys; print(duckdb.sql(sys.argv[1]).fetchall())",
            sql,
        ])
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8_lossy(&out.stdout);
    assert!(rows.contains("login") || rows.contains("deposit"), "{rows}");

    // The demo ends by itself after --api-for and leaves its cluster
    // running; psql as printed, then --stop as printed.
    let ended = tokio::time::timeout(Duration::from_secs(90), demo.wait()).await;
    assert!(
        matches!(&ended, Ok(Ok(status)) if status.success()),
        "the demo did not end well: {ended:?}"
    );
    printed.extend(rest.await?);
    let transcript = printed.join("\n");
    let psql: Vec<String> = printed
        .iter()
        .map(|line| line.trim_start())
        .filter(|line| line.starts_with("psql "))
        .map(str::to_string)
        .collect();
    assert_eq!(psql.len(), 1, "{transcript}");
    let query = "SELECT count(*) > 0 FROM strata.activity";
    let out = tokio::process::Command::new("sh")
        .args(["-c", &format!("{} -AtX -c '{query}'", psql[0])])
        .output()
        .await?;
    let answer = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        answer.trim(),
        "t",
        "{}\n{}",
        psql[0],
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(transcript.contains("strata demo --stop"), "{transcript}");
    let stop = Command::new(strata_bin())
        .args(["demo", "--stop", "--dir", &dir_arg])
        .output()?;
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    Ok(())
}
