//! TLS to Postgres: a private cluster started with `ssl=on` whose
//! `pg_hba.conf` accepts only `hostssl` sessions authenticated by a client
//! certificate (`cert`), with a CA, server and client certificates made
//! here by openssl. The whole pipeline (produce, relay, archive, API read)
//! runs over `sslmode=verify-full`; a wrong CA and a wrong host name stop
//! the processes at start-up with an error naming the setting; plaintext
//! (`sslmode=disable`) is refused by the server and said so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use strata_core::config::DatabaseUrl;
use strata_embedded::{Cluster, ClusterOptions};
use strata_pg::PgError;
use strata_proto::v1::{ListActivityRequest, Order};
use strata_tests::api::{authed, token, ApiServer};
use strata_tests::archive::{run_archive, spawn_archiver, S3Target};
use strata_tests::{StrataProcess, TestEnv};

use crate::archive::{day_arg, events_for, past_day, produce, ship, user_history};

/// Certificates made for one test: a CA and the server's and client's
/// certificates it signed, and a second CA that signed nothing here.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes the files in `dir` with the openssl command line (P-256 keys,
    /// valid for two days). The server certificate names only `localhost`.
    fn make(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .context("run openssl (install it: apt-get install openssl)")?;
            anyhow::ensure!(
                output.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(())
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "wrong-ca"] {
            let (crt, pem) = (format!("{ca}.crt"), format!("{ca}.key"));
            let subject = format!("/CN=strata test {ca}");
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
            args.extend(key);
            args.extend([
                "-keyout",
                &pem,
                "-out",
                &crt,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(&args)?;
        }
        for (leaf, subject, extensions) in [
            (
                "server",
                "/CN=localhost",
                "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
            ),
            (
                "client",
                "/CN=strata",
                "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            ),
        ] {
            let (crt, pem, csr, ext) = (
                format!("{leaf}.crt"),
                format!("{leaf}.key"),
                format!("{leaf}.csr"),
                format!("{leaf}.ext"),
            );
            std::fs::write(dir.join(&ext), extensions)?;
            let mut args = vec!["req", "-new", "-subj", subject];
            args.extend(key);
            args.extend(["-keyout", &pem, "-out", &csr]);
            openssl(&args)?;
            openssl(&[
                "x509", "-req", "-days", "2", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-extfile", &ext, "-out", &crt,
            ])?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }
}

/// A cluster that takes only TLS sessions with a client certificate.
struct TlsCluster {
    cluster: Cluster,
    pki: Pki,
}

impl TlsCluster {
    async fn start(root: &Path) -> anyhow::Result<Self> {
        // The certificates live in the cluster's folder, which the cluster
        // hands to the server's user: the server key must be its own.
        let pki = Pki::make(&root.join("pki"))?;
        let options = ClusterOptions::new(root)
            .setting("ssl", "on")
            .setting("ssl_cert_file", &pki.path("server.crt").to_string_lossy())
            .setting("ssl_key_file", &pki.path("server.key").to_string_lossy())
            .setting("ssl_ca_file", &pki.path("ca.crt").to_string_lossy());
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(options)).await??;
        let tls = Self { cluster, pki };
        // initdb's pg_hba.conf trusts plaintext; from now on only TLS with
        // a client certificate signed by the CA, whose name is the user's.
        // `scram_user` signs in with a password over TLS (SCRAM, where
        // channel binding applies).
        std::fs::write(
            tls.cluster.data_dir().join("pg_hba.conf"),
            "hostssl all scram_user 127.0.0.1/32 scram-sha-256\n\
             hostssl all all 127.0.0.1/32 cert\nhostssl all all ::1/128 cert\n",
        )?;
        strata_tests::connect(&tls.url("postgres", "localhost", "verify-full", "ca.crt"))
            .await?
            .batch_execute("SELECT pg_reload_conf()")
            .await?;
        let plaintext = tls.url("postgres", "localhost", "disable", "ca.crt");
        let refused = strata_tests::wait_until(Duration::from_secs(10), || async {
            strata_tests::connect(&plaintext).await.is_err()
        })
        .await;
        anyhow::ensure!(refused, "the cluster still takes plaintext sessions");
        Ok(tls)
    }

    /// URL of `database` through `host` with `sslmode`, the root
    /// certificate `root` of the test's PKI and the client certificate.
    fn url(&self, database: &str, host: &str, sslmode: &str, root: &str) -> String {
        format!(
            "postgres://strata@{host}:{}/{database}?sslmode={sslmode}&sslrootcert={}&sslcert={}&sslkey={}",
            self.cluster.port(),
            self.pki.path(root).display(),
            self.pki.path("client.crt").display(),
            self.pki.path("client.key").display(),
        )
    }
}

/// Waits (up to 60 s) for `process` to exit; returns its success and log.
async fn wait_for_exit(mut process: StrataProcess) -> anyhow::Result<(bool, String)> {
    let status = process
        .wait_exit(Duration::from_secs(60))
        .await
        .with_context(|| format!("{} kept running: {}", process.name, process.log_tail()))?;
    Ok((
        status.success(),
        std::fs::read_to_string(&process.log_path).unwrap_or_default(),
    ))
}

/// Section 1 of issue 14: produce, relay, archive and read through the API
/// with every session over `verify-full`; then the failures an operator
/// meets when a setting is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_pipeline_runs_over_verify_full_and_bad_settings_are_named() -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("strata-test-tls")
        .tempdir()?;
    let tls = TlsCluster::start(&root.path().join("cluster")).await?;
    let admin =
        strata_tests::connect(&tls.url("postgres", "localhost", "verify-full", "ca.crt")).await?;
    for database in ["tls_src", "tls_hot"] {
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .with_context(|| format!("create {database}"))?;
    }

    let url = |db: &str| tls.url(db, "localhost", "verify-full", "ca.crt");
    let env = TestEnv::with_urls(url("tls_src"), url("tls_hot")).await?;
    let day = past_day(2);
    let events = events_for(day, 300);
    produce(&env, &events).await?;
    ship(&env).await?;
    let expected = user_history(&env, "user-007").await?;
    anyhow::ensure!(!expected.is_empty(), "no events of user-007");

    let target = S3Target::new("tls").await?;
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(day)], &[], None).await?;
    assert!(ok, "archive over TLS failed: {output}");

    let api = ApiServer::start(&env, &target, "tls-api", &[]).await?;
    let mut client = api.client().await?;
    let reader = token("agent-1", &["activity:read:any"], 300);
    let mut read = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_activity(authed(
                ListActivityRequest {
                    user_id: "user-007".into(),
                    start_time: None,
                    end_time: None,
                    kinds: Vec::new(),
                    order: Order::Ascending as i32,
                    page_size: 50,
                    page_token: page_token.clone(),
                },
                &reader,
            ))
            .await?
            .into_inner();
        read.extend(page.events.into_iter().map(|e| e.event_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected_ids: Vec<String> = expected.iter().map(|r| r.event_id.to_string()).collect();
    assert_eq!(read, expected_ids, "the API's history over TLS");

    // Every session the pipeline left open is TLS (the server would
    // refuse any other, this proves the check is not vacuous).
    let sessions: Vec<(String, bool)> = admin
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.backend_type = 'client backend'",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(
        sessions
            .iter()
            .any(|(app, _)| app.starts_with("strata-api")),
        "{sessions:?}"
    );
    assert!(sessions.iter().all(|(_, ssl)| *ssl), "{sessions:?}");
    drop(api);

    // A CA that did not sign the server's certificate: the relay exits at
    // start-up naming sslrootcert.
    let wrong_ca = TestEnv {
        source_url: tls.url("tls_src", "localhost", "verify-full", "wrong-ca.crt"),
        hot_url: tls.url("tls_hot", "localhost", "verify-full", "wrong-ca.crt"),
    };
    let relay = StrataProcess::spawn(&wrong_ca, "tls-wrong-ca", &[], None)?;
    let (ok, log) = wait_for_exit(relay).await?;
    assert!(!ok, "{log}");
    assert!(
        log.contains("not signed by a CA in sslrootcert=") && log.contains("wrong-ca.crt"),
        "{log}"
    );
    // `require` with that root certificate checks the chain too (libpq).
    let required = tls.url("tls_hot", "localhost", "require", "wrong-ca.crt");
    assert!(strata_tests::connect(&required).await.is_err());

    // A host name the certificate does not hold: the archiver exits at
    // start-up naming the host and sslmode.
    let wrong_host = TestEnv {
        source_url: tls.url("tls_src", "127.0.0.1", "verify-full", "ca.crt"),
        hot_url: tls.url("tls_hot", "127.0.0.1", "verify-full", "ca.crt"),
    };
    let archiver = spawn_archiver(&wrong_host, &target, "tls-wrong-host", &[], None)?;
    let (ok, log) = wait_for_exit(archiver).await?;
    assert!(!ok, "{log}");
    assert!(
        log.contains("not valid for host \"127.0.0.1\"") && log.contains("sslmode=verify-full"),
        "{log}"
    );
    // verify-ca checks the chain only, so the same address is accepted.
    strata_tests::connect(&tls.url("tls_hot", "127.0.0.1", "verify-ca", "ca.crt")).await?;
    // An address alone (hostaddr=, no host=) works with require and
    // verify-ca, as in libpq; verify-full says it needs a host name.
    for sslmode in ["require", "verify-ca"] {
        let by_address = format!(
            "postgres://strata@/tls_hot?hostaddr=127.0.0.1&port={}&sslmode={sslmode}&sslrootcert={}&sslcert={}&sslkey={}",
            tls.cluster.port(),
            tls.pki.path("ca.crt").display(),
            tls.pki.path("client.crt").display(),
            tls.pki.path("client.key").display(),
        );
        strata_tests::connect(&by_address)
            .await
            .with_context(|| format!("hostaddr only, sslmode={sslmode}"))?
            .batch_execute("SELECT 1")
            .await?;
    }

    // Plaintext: the server refuses, and the error says why.
    let plaintext = DatabaseUrl::new(tls.url("tls_hot", "localhost", "disable", "ca.crt"));
    let err = strata_pg::connect(&plaintext, "strata-tests", Duration::from_secs(10))
        .await
        .expect_err("the server takes TLS sessions only");
    assert!(matches!(err, PgError::Tls { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("refused a plaintext session")
            && shown.contains("sslmode=disable")
            && shown.contains("no encryption"),
        "{shown}"
    );
    assert!(!err.is_retryable());

    // SCRAM over TLS with channel binding required: the server checks the
    // hash of its certificate that the client computed (tls-server-end-point).
    admin
        .batch_execute("CREATE ROLE scram_user LOGIN PASSWORD 'binding-pw'; GRANT CONNECT ON DATABASE tls_hot TO scram_user")
        .await?;
    for sslmode in ["verify-full", "require"] {
        let bound = format!(
            "postgres://scram_user:binding-pw@localhost:{}/tls_hot?sslmode={sslmode}&sslrootcert={}&channel_binding=require",
            tls.cluster.port(),
            tls.pki.path("ca.crt").display()
        );
        strata_tests::connect(&bound)
            .await
            .with_context(|| format!("SCRAM-SHA-256-PLUS over sslmode={sslmode}"))?
            .batch_execute("SELECT 1")
            .await?;
    }

    // Without a client certificate the server refuses too (cert auth).
    let anonymous = DatabaseUrl::new(format!(
        "postgres://strata@localhost:{}/tls_hot?sslmode=verify-full&sslrootcert={}",
        tls.cluster.port(),
        tls.pki.path("ca.crt").display()
    ));
    let err = strata_pg::connect(&anonymous, "strata-tests", Duration::from_secs(10))
        .await
        .expect_err("a client certificate is required");
    assert!(err.to_string().contains("certificate"), "{err}");
    Ok(())
}
