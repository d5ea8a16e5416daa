//! A private, throwaway Postgres cluster started from the machine's own
//! server binaries: the embedded default of `strata demo`, the clusters of
//! `strata bench`, and the clusters tests stop and restart.
//!
//! `initdb` refuses to run as root, so when we are root the cluster is
//! owned by, and run as, the `postgres` system user (via `runuser`).

#![warn(unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a private cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No Postgres server binaries were found.
    #[error("no PostgreSQL server binaries found (looked for initdb in $STRATA_PG_BIN, /usr/lib/postgresql/*/bin and PATH); install them, e.g. `apt-get install postgresql` on Debian/Ubuntu, or set STRATA_PG_BIN to the folder holding initdb and pg_ctl")]
    BinariesNotFound,
    /// Running as root but there is no unprivileged user to own the cluster.
    #[error("running as root, and initdb refuses root: create the `postgres` system user (installing the postgresql package does) or run as an ordinary user")]
    NoUnprivilegedUser,
    /// A filesystem operation failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error (shown in the message, so not also the `source()`:
        /// `{err:#}` would print it twice).
        error: std::io::Error,
    },
    /// `initdb` or `pg_ctl` failed.
    #[error("{command} failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its output (tail), and the server log tail when relevant.
        output: String,
    },
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Folder for the data directory and the server log; created if missing,
    /// reused when it already holds a cluster.
    pub root: PathBuf,
    /// Port to listen on (127.0.0.1); a free one when `None`.
    pub port: Option<u16>,
    /// Extra `postgresql.conf` settings (applied at every start).
    pub settings: Vec<(String, String)>,
    /// Leave the server running when the [`Cluster`] is dropped (the demo
    /// keeps it up for inspection). A server already running in `root` is
    /// then reused instead of started.
    pub keep_running: bool,
}

impl ClusterOptions {
    /// Durable defaults (fsync and synchronous_commit on) in `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            port: None,
            settings: vec![
                ("max_connections".into(), "300".into()),
                ("shared_buffers".into(), "256MB".into()),
                ("max_wal_size".into(), "4GB".into()),
                ("fsync".into(), "on".into()),
                ("synchronous_commit".into(), "on".into()),
            ],
            keep_running: false,
        }
    }

    /// Adds or replaces one setting.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.retain(|(k, _)| k != key);
        self.settings.push((key.into(), value.into()));
        self
    }
}

/// A running private cluster. Stopped (fast) on drop.
#[derive(Debug)]
pub struct Cluster {
    bin_dir: PathBuf,
    root: PathBuf,
    port: u16,
    settings: Vec<(String, String)>,
    run_as: Option<String>,
    running: bool,
    keep_running: bool,
}

/// Superuser created by `initdb` in every private cluster.
pub const SUPERUSER: &str = "strata";

impl Cluster {
    /// Initialises (when needed) and starts a cluster.
    pub fn start(options: ClusterOptions) -> Result<Cluster, EmbeddedError> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root() {
            if Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                Some("postgres".to_string())
            } else {
                return Err(EmbeddedError::NoUnprivilegedUser);
            }
        } else {
            None
        };
        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        std::fs::create_dir_all(&options.root).map_err(|error| EmbeddedError::Io {
            context: format!("create {}", options.root.display()),
            error,
        })?;
        let root = options
            .root
            .canonicalize()
            .map_err(|error| EmbeddedError::Io {
                context: format!("resolve {}", options.root.display()),
                error,
            })?;
        if let Some(user) = &run_as {
            chown_to(&root, user)?;
        }
        let mut cluster = Cluster {
            bin_dir,
            root,
            port,
            settings: options.settings,
            run_as,
            running: false,
            keep_running: options.keep_running,
        };
        if cluster.keep_running {
            if let Some(port) = cluster.running_port() {
                cluster.port = port;
                cluster.running = true;
                return Ok(cluster);
            }
        }
        if !cluster.data_dir().join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        cluster.start_server()?;
        Ok(cluster)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL of database `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A `psql` command line for humans.
    pub fn psql_command(&self, database: &str) -> String {
        format!("psql '{}'", self.url(database))
    }

    /// The port of a server already running on this data directory.
    fn running_port(&self) -> Option<u16> {
        let data = self.data_dir();
        self.run("pg_ctl", &["status", "-D", &data.to_string_lossy()])
            .ok()?;
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn initdb(&self) -> Result<(), EmbeddedError> {
        let data = self.data_dir();
        let data = data.to_string_lossy();
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )?;
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), EmbeddedError> {
        let mut server_options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.port,
            self.data_dir().display()
        );
        for (key, value) in &self.settings {
            server_options.push_str(&format!(" -c {key}={value}"));
        }
        let data = self.data_dir();
        let log = self.log_file();
        let result = self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "120",
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &server_options,
            ],
        );
        if let Err(EmbeddedError::Command {
            command,
            status,
            output,
        }) = result
        {
            let log_tail = std::fs::read_to_string(self.log_file())
                .map(|text| tail(&text, 20))
                .unwrap_or_default();
            return Err(EmbeddedError::Command {
                command,
                status,
                output: format!("{output}\nserver log:\n{log_tail}"),
            });
        }
        result?;
        self.running = true;
        Ok(())
    }

    /// Stops the server, `immediate` = crash-like (no checkpoint).
    pub fn stop_with(&mut self, immediate: bool) -> Result<(), EmbeddedError> {
        if !self.running {
            return Ok(());
        }
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-D",
                &data.to_string_lossy(),
                "-m",
                if immediate { "immediate" } else { "fast" },
            ],
        )?;
        self.running = false;
        Ok(())
    }

    /// Stops the server cleanly.
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        self.stop_with(false)
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&mut self) -> Result<(), EmbeddedError> {
        if self.running {
            return Ok(());
        }
        self.start_server()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String, EmbeddedError> {
        let program_path = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program_path);
                c
            }
            None => Command::new(&program_path),
        };
        command.args(args).current_dir(&self.root);
        let shown = format!("{} {}", program_path.display(), args.join(" "));
        let output = command.output().map_err(|error| EmbeddedError::Io {
            context: format!("run {shown}"),
            error,
        })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            return Err(EmbeddedError::Command {
                command: shown,
                status: output.status.to_string(),
                output: tail(&text, 20),
            });
        }
        Ok(text)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep_running {
            return;
        }
        if let Err(err) = self.stop() {
            tracing::warn!(error = %err, "stop private postgres cluster");
        }
    }
}

/// Finds the folder holding `initdb` and `pg_ctl`: `$STRATA_PG_BIN`, then
/// the newest `/usr/lib/postgresql/<version>/bin`, then `PATH`.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    if let Some(dir) = std::env::var_os("STRATA_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                return Ok(dir);
            }
        }
    }
    Err(EmbeddedError::BinariesNotFound)
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, EmbeddedError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| EmbeddedError::Io {
        context: "find a free port".into(),
        error,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|error| EmbeddedError::Io {
            context: "find a free port".into(),
            error,
        })
}

fn is_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

fn chown_to(path: &Path, user: &str) -> Result<(), EmbeddedError> {
    let status = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(path)
        .status()
        .map_err(|error| EmbeddedError::Io {
            context: format!("chown {}", path.display()),
            error,
        })?;
    if !status.success() {
        return Err(EmbeddedError::Command {
            command: format!("chown -R {user}: {}", path.display()),
            status: status.to_string(),
            output: String::new(),
        });
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    use strata_core::error_chain as chain;

    #[test]
    fn an_io_failure_prints_its_cause_once() {
        let err = EmbeddedError::Io {
            context: "create /var/lib/strata-demo".into(),
            error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let expected = format!(
            "create /var/lib/strata-demo: {}",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied)
        );
        assert_eq!(err.to_string(), expected);
        assert_eq!(chain(&err), expected);
    }
}
