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
