//! `strata relay` / `strata archiver` as real child processes that tests
//! can SIGKILL, SIGSTOP and SIGCONT.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::db::TestEnv;

/// Path of the `strata` binary: `$STRATA_BIN`, else the workspace's
/// `target/debug/strata`.
pub fn strata_bin() -> PathBuf {
    match std::env::var_os("STRATA_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/strata"),
    }
}

/// Folder of relay logs (kept for post-mortems).
pub fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("strata-test-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A running `strata` command (relay or archiver).
pub struct StrataProcess {
    child: Child,
    /// Label in logs.
    pub name: String,
    /// Its log file.
    pub log_path: PathBuf,
}

/// Settings every test relay gets: fast polls, fast elections, short
/// backoff, so tests take seconds.
pub fn fast_settings() -> HashMap<String, String> {
    [
        ("relay.poll_interval", "500ms"),
        ("relay.reconcile_after", "5s"),
        ("relay.reconcile_interval", "500ms"),
        ("relay.election_interval", "200ms"),
        ("relay.backoff_initial", "50ms"),
        ("relay.backoff_max", "1s"),
        ("relay.statement_timeout", "10s"),
        ("relay.batch_size", "200"),
        // Retention tests expect a partition dropped once archived; the
        // subscription stream's own retention would keep freshly shipped
        // (backdated) days for a day.
        ("archiver.stream_retention", "\"0s\""),
        ("metrics.listen", "\"\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl StrataProcess {
    /// Starts a relay for `env` (one source named `main`), with `settings`
    /// overriding [`fast_settings`] and optional failpoints.
    pub fn spawn(
        env: &TestEnv,
        name: &str,
        settings: &[(&str, &str)],
        failpoints: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::spawn_command(env, &["relay"], name, settings, failpoints)
    }

    /// Starts `strata <args>` for `env` (one source named `main`), with
    /// `settings` overriding [`fast_settings`] and optional failpoints.
    pub fn spawn_command(
        env: &TestEnv,
        args: &[&str],
        name: &str,
        settings: &[(&str, &str)],
        failpoints: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut merged = fast_settings();
        for (k, v) in settings {
            merged.insert(k.to_string(), v.to_string());
        }
        let log_path = log_dir().join(format!(
            "{name}-{}.log",
            chrono::Utc::now().format("%H%M%S%.6f")
        ));
        let log = File::create(&log_path).context("create process log")?;
        let log_err = log.try_clone()?;
        let mut command = Command::new(strata_bin());
        command
            .args(args)
            .env("STRATA_HOT_STORE__URL", &env.hot_url)
            .env("STRATA_SOURCES__MAIN__URL", &env.source_url)
            .env("RUST_LOG", "info,strata_relay=debug,strata_archiver=debug")
            .env_remove("STRATA_FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for (k, v) in &merged {
            command.arg("--set").arg(format!("{k}={v}"));
        }
        if let Some(points) = failpoints {
            command.env("STRATA_FAILPOINTS", points);
        }
        let child = command.spawn().with_context(|| {
            format!(
                "spawn {} (build it first: cargo build --bins)",
                strata_bin().display()
            )
        })?;
        Ok(Self {
            child,
            name: name.to_string(),
            log_path,
        })
    }

    /// Starts `strata <args>` with no database URL of the harness's own:
    /// the caller gives the hot store and sources through `env_vars`
    /// (`STRATA_HOT_STORE__URL`, `STRATA_HOT_STORE__URL_FILE`, ...) and/or
    /// `settings` (`hot_store.url=...`), which override [`fast_settings`].
    /// The harness's own URL variables (and their `_FILE` forms) are
    /// removed from the inherited environment first.
    /// A variable given with an empty value is removed from the
    /// inherited environment instead (`("AWS_ACCESS_KEY_ID", "")`).
    pub fn spawn_with_env(
        args: &[&str],
        name: &str,
        env_vars: &[(&str, &str)],
        settings: &[(&str, &str)],
        failpoints: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut merged = fast_settings();
        for (k, v) in settings {
            merged.insert(k.to_string(), v.to_string());
        }
        let log_path = log_dir().join(format!(
            "{name}-{}.log",
            chrono::Utc::now().format("%H%M%S%.6f")
        ));
        let log = File::create(&log_path).context("create process log")?;
        let log_err = log.try_clone()?;
        let mut command = Command::new(strata_bin());
        command
            .args(args)
            .env_remove("STRATA_HOT_STORE__URL")
            .env_remove("STRATA_HOT_STORE__URL_FILE")
            .env_remove("STRATA_SOURCES__MAIN__URL")
            .env_remove("STRATA_SOURCES__MAIN__URL_FILE")
            .env("RUST_LOG", "info,strata_relay=debug,strata_archiver=debug")
            .env_remove("STRATA_FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for (k, v) in env_vars {
            if v.is_empty() {
                command.env_remove(k);
            } else {
                command.env(k, v);
            }
        }
        for (k, v) in &merged {
            command.arg("--set").arg(format!("{k}={v}"));
        }
        if let Some(points) = failpoints {
            command.env("STRATA_FAILPOINTS", points);
        }
        let child = command.spawn().with_context(|| {
            format!(
                "spawn {} (build it first: cargo build --bins)",
                strata_bin().display()
            )
        })?;
        Ok(Self {
            child,
            name: name.to_string(),
            log_path,
        })
    }

    /// Starts `count` relays with default settings, named `prefix-<i>`.
    pub fn spawn_many(env: &TestEnv, prefix: &str, count: usize) -> anyhow::Result<Vec<Self>> {
        (0..count)
            .map(|i| Self::spawn(env, &format!("{prefix}-{i}"), &[], None))
            .collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) by name.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// SIGTERM (graceful shutdown).
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit (without blocking the
    /// test's runtime, which also drives the producers).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far (for assertion messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for StrataProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
