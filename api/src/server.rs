//! `strata api`: the gRPC listener with the history service, gRPC health
//! checking and server reflection (v1 and v1alpha), optional TLS, and this
//! process's export-job worker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strata_archive::ObjectStore;
use strata_core::config::{ApiConfig, DatabaseUrl, ObjectStoreConfig};
use strata_proto::subscription_server::subscription_service_server::SubscriptionServiceServer as SubscriptionServer;
use strata_proto::v1::history_service_server::HistoryServiceServer as HistoryServer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, AdmissionLimits};
use crate::auth::{Authenticator, KeyConfigError};
use crate::history::HistoryReader;
use crate::jobs::Worker;
use crate::limits::Limits;
use crate::page_token::{KeyError, PageTokenKey, PageTokenKeys};
use crate::pool::{Pool, PoolError};
use crate::service::{HistoryService, ServiceParts, ServiceSettings};
use crate::subscribe::{Streams, Tail};

/// Fails fast, at start-up, on a wrong URL or a role that cannot read the
/// audit table.
const PROBE_SQL: &str = "SELECT count(*) FROM strata.api_audit WHERE false";

/// Largest request message accepted; larger ones get RESOURCE_EXHAUSTED
/// before any handler runs.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How often the gRPC health status is re-checked against the database.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long one health check may take before the database counts as down.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// `application_name` of the health check's own session.
const HEALTH_APPLICATION_NAME: &str = "strata-api-health";

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The `[api]` section.
    pub api: ApiConfig,
    /// The hot store (used when `api.database_url` is not set).
    pub hot_store_url: DatabaseUrl,
    /// The archive.
    pub object_store: ObjectStoreConfig,
}

/// Why the API could not start or stopped. The binary prints these with
/// their chain (`{err:#}`), so a cause is either the `source()` or shown in
/// the message, never both (it would print twice): the `source()` when it
/// ends the message, in the message when text follows it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A bearer-token verification key (the `source()`).
    #[error("invalid configuration")]
    Keys(#[from] KeyConfigError),
    /// No bearer-token verification key at all.
    #[error("invalid configuration: api.jwt_hs256_secrets or api.jwt_public_keys must name at least one key (see README: issuing tokens)")]
    NoKeys,
    /// An `api.page_token_keys` entry that is not `id=secret`.
    #[error("invalid configuration: api.page_token_keys entries are id=secret")]
    PageTokenKeyEntry,
    /// Page-token keys that cannot sign (the `source()`).
    #[error("invalid configuration: api.page_token_keys")]
    PageTokenKeys(#[source] KeyError),
    /// The reflection service (the `source()`).
    #[error("invalid configuration: reflection")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The listener cannot be bound (the `source()`).
    #[error("invalid configuration: api.listen {listen}")]
    Bind {
        /// The address.
        listen: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The object store.
    #[error(transparent)]
    Store(#[from] strata_archive::StoreError),
    /// No connection to the API's database at start-up.
    #[error("api database: {error} ({url})")]
    Connect {
        /// The database, without its password.
        url: String,
        /// Why (shown in the message).
        error: PoolError,
    },
    /// The API's role cannot read the audit table (not migrated?).
    #[error("api database: cannot read strata.api_audit as {role:?}: {error} (run `strata migrate` first)")]
    NotMigrated {
        /// `api.db_role` (`""` when unset: the login user).
        role: String,
        /// Why (shown in the message).
        error: tokio_postgres::Error,
    },
    /// The listener (the `source()`).
    #[error("grpc server")]
    Transport(#[from] tonic::transport::Error),
    /// A TLS certificate or key file cannot be read (the `source()`).
    #[error("tls: read {}", path.display())]
    Tls {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Page-token keys from `id=secret` entries, or one random key.
pub fn page_token_keys(entries: &[String]) -> Result<PageTokenKeys, ServeError> {
    let keys = if entries.is_empty() {
        let mut secret = Vec::with_capacity(32);
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        tracing::warn!("api.page_token_keys is empty: page tokens are signed with a random key and die with this process");
        vec![PageTokenKey::new("ephemeral", secret)]
    } else {
        entries
            .iter()
            .map(|entry| {
                entry
                    .split_once('=')
                    .map(|(id, secret)| PageTokenKey::new(id, secret.as_bytes().to_vec()))
                    .ok_or(ServeError::PageTokenKeyEntry)
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    PageTokenKeys::new(keys).map_err(ServeError::PageTokenKeys)
}

/// HTTP/2 streams one client connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Serves until `cancel`; `ready` learns the bound address.
pub async fn serve(
    options: ApiOptions,
    cancel: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), ServeError> {
    serve_with_reader(options, None, cancel, ready).await
}

/// [`serve`] with a reader the caller keeps a handle on (the benchmark
/// reads its request counters and empties its cache).
pub async fn serve_with_reader(
    options: ApiOptions,
    reader: Option<Arc<HistoryReader>>,
    cancel: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), ServeError> {
    crate::metrics::register();
    let api = &options.api;
    let hs256: BTreeMap<String, String> = api
        .jwt_hs256_secrets
        .iter()
        .map(|(kid, secret)| (kid.clone(), secret.expose().to_string()))
        .collect();
    let auth = Authenticator::new(
        &hs256,
        &api.jwt_public_keys,
        &api.jwt_issuer,
        &api.jwt_audience,
        api.jwt_leeway,
    )?;
    if !auth.has_keys() {
        return Err(ServeError::NoKeys);
    }
    let tokens = page_token_keys(
        &api.page_token_keys
            .iter()
            .map(|s| s.expose().to_string())
            .collect::<Vec<_>>(),
    )?;
    let store = ObjectStore::from_config(&options.object_store).await?;
    let prefix = options.object_store.prefix.trim_matches('/').to_string();
    let export_prefix = if prefix.is_empty() {
        api.export_prefix.trim_matches('/').to_string()
    } else {
        format!("{prefix}/{}", api.export_prefix.trim_matches('/'))
    };
    let reader = reader.unwrap_or_else(|| Arc::new(HistoryReader::new(store.clone(), prefix)));
    let url = api
        .database_url
        .clone()
        .unwrap_or_else(|| options.hot_store_url.clone());
    let pool = Pool::new(
        url.expose(),
        api.db_role.as_deref(),
        api.statement_timeout,
        api.pool_size,
    );
    // Fail fast on a wrong URL or a missing role rather than on the first call.
    let probe = pool.get().await.map_err(|error| ServeError::Connect {
        url: url.to_string(),
        error,
    })?;
    probe
        .query_one(PROBE_SQL, &[])
        .await
        .map_err(|error| ServeError::NotMigrated {
            role: api.db_role.clone().unwrap_or_default(),
            error,
        })?;
    drop(probe);

    // Subscriptions read with connections of their own (a replica when
    // configured); wake-ups come from the primary's notifications.
    let stream_url = api
        .subscribe_database_url
        .clone()
        .unwrap_or_else(|| url.clone());
    let stream_pool = Pool::new(
        stream_url.expose(),
        api.db_role.as_deref(),
        api.statement_timeout,
        api.subscribe_pool_size,
    )
    .with_session_settings(crate::subscribe::read::SESSION_SETTINGS);
    let tail = Arc::new(Tail::new(stream_pool.clone()));
    let tail_task = tokio::spawn(
        tail.clone()
            .run(api.subscribe_poll_interval, cancel.child_token()),
    );
    let listen_task = tokio::spawn(crate::subscribe::tail::listen(
        tail.clone(),
        url.clone(),
        api.statement_timeout,
        cancel.child_token(),
    ));
    // Consumer groups' leases live on the primary; a statement never
    // outlasts half a lease, so a slow one fails before the lease does.
    let group_pool = Pool::new(
        url.expose(),
        api.db_role.as_deref(),
        api.statement_timeout.min(api.group_session_timeout / 2),
        api.subscribe_pool_size,
    )
    .with_session_settings(crate::subscribe::read::SESSION_SETTINGS);
    let streams = Arc::new(Streams {
        pool: stream_pool,
        tail,
        groups: group_pool,
    });

    let wake_jobs = Arc::new(Notify::new());
    let worker = Worker {
        pool: pool.clone(),
        reader: reader.clone(),
        store: store.clone(),
        wake: wake_jobs.clone(),
        spool_dir: std::env::temp_dir(),
        retention: api.export_retention,
        export_prefix: export_prefix.clone(),
        abandoned_upload_after: options.object_store.abandoned_upload_after,
    };
    let worker_task = tokio::spawn(worker.run(cancel.child_token()));

    let admission = Arc::new(Admission::new(AdmissionLimits {
        peer_rate: api.peer_rate_per_second,
        peer_burst: api.peer_burst,
        audit_rate: api.audit_refusals_per_second,
        audit_burst: api.audit_refusals_burst,
        calls_per_principal: api.max_calls_per_principal,
        calls_total: api.max_calls_in_flight,
        cold_reads_per_principal: api.max_cold_reads_per_principal,
        cold_reads_total: api.max_cold_reads,
        subscriptions_per_principal: api.max_subscriptions_per_principal,
        subscriptions_total: api.max_subscriptions,
    }));
    let summaries_task = tokio::spawn(audit_summaries(
        pool.clone(),
        admission.clone(),
        api.audit_summary_interval,
        cancel.child_token(),
    ));

    let service = HistoryService::new(ServiceParts {
        admission,
        pool,
        reader,
        store,
        auth,
        tokens,
        limits: Limits::new(
            api.rate_per_second,
            api.rate_burst,
            api.max_concurrent_exports,
        ),
        streams,
        wake_jobs,
        cancel: cancel.clone(),
        settings: ServiceSettings {
            page_token_ttl: api.page_token_ttl,
            export_prefix,
            export_url_ttl: api.export_url_ttl,
            export_retention: api.export_retention,
            request_timeout: api.request_timeout,
            get_event_max_days: usize::try_from(api.get_event_max_days).unwrap_or(usize::MAX),
            group_session_timeout: api.group_session_timeout,
            group_ack_timeout: api.group_ack_timeout,
        },
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<HistoryServer<HistoryService>>()
        .await;
    let health_task = tokio::spawn(watch_database(
        url.clone(),
        health_reporter.clone(),
        cancel.child_token(),
    ));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;

    // Streams one connection may have open at once: held refusals and slow
    // calls of one client occupy its own connection's streams, not the
    // server's (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION));
    if let Some(cert_file) = &api.tls_cert_file {
        let key_file = api.tls_key_file.clone().unwrap_or_default();
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| ServeError::Tls {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert = read(cert_file)?;
        let key = read(&key_file)?;
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let listen = api.listen;
    let bind = |source| ServeError::Bind { listen, source };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    tracing::info!(address = %bound, tls = api.tls_cert_file.is_some(), "history API listening");
    if let Some(ready) = ready {
        let _ = ready.send(bound);
    }
    // Small request/response exchanges: without TCP_NODELAY, Nagle plus
    // delayed ACKs add ~40 ms to a reply.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |stream| {
            if let Ok(stream) = &stream {
                let _ = stream.set_nodelay(true);
            }
            stream
        },
    );
    let result = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            SubscriptionServer::new(service.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(16 * 1024 * 1024),
        )
        .add_service(
            HistoryServer::new(service)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(16 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(incoming, cancel.cancelled())
        .await;
    health_reporter
        .set_not_serving::<HistoryServer<HistoryService>>()
        .await;
    cancel.cancel();
    let _ = worker_task.await;
    let _ = summaries_task.await;
    let _ = health_task.await;
    let _ = tail_task.await;
    let _ = listen_task.await;
    result?;
    Ok(())
}

/// Keeps the gRPC health status (the whole server's, `""`, and the
/// history service's) at SERVING while the API's database answers a
/// `SELECT 1` within [`HEALTH_CHECK_TIMEOUT`], and NOT_SERVING while it
/// does not, checking every [`HEALTH_CHECK_INTERVAL`]: a load balancer
/// then sends calls elsewhere. The check has a session of its own, not one
/// of the pool: a pool busy with calls is not a database that is down.
/// Cold reads do not count (an archive outage fails only reads of
/// archived days).
async fn watch_database(
    url: DatabaseUrl,
    reporter: tonic_health::server::HealthReporter,
    cancel: CancellationToken,
) {
    use tonic_health::ServingStatus;
    let service = <HistoryServer<HistoryService> as tonic::server::NamedService>::NAME;
    let mut session: Option<tokio_postgres::Client> = None;
    let mut serving = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
        }
        let check = async {
            let client = match session.take() {
                Some(client) if !client.is_closed() => client,
                _ => strata_pg::connect(&url, HEALTH_APPLICATION_NAME, HEALTH_CHECK_TIMEOUT)
                    .await
                    .map_err(|err| err.to_string())?,
            };
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|err| strata_pg::describe_pg_error(&err))?;
            Ok::<_, String>(client)
        };
        let result = match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, check).await {
            Ok(Ok(client)) => {
                session = Some(client);
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!("no answer within {HEALTH_CHECK_TIMEOUT:?}")),
        };
        let now_serving = result.is_ok();
        if now_serving != serving {
            match &result {
                Ok(()) => tracing::info!("database answers again: gRPC health SERVING"),
                Err(error) => {
                    tracing::warn!(%error, "database unreachable: gRPC health NOT_SERVING")
                }
            }
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in ["", service] {
                reporter.set_service_status(name, status).await;
            }
            serving = now_serving;
        }
    }
}

/// Writes the refused calls' audit summaries every `interval`, and once
/// more at shutdown.
async fn audit_summaries(
    pool: Pool,
    admission: Arc<Admission>,
    interval: std::time::Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                crate::audit::write_summaries(&pool, &admission).await;
                return;
            }
            _ = tokio::time::sleep(interval) => {
                crate::audit::write_summaries(&pool, &admission).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use strata_core::error_chain as chain;

    fn key_error(kid: &str, spec: String) -> KeyConfigError {
        Authenticator::new(
            &BTreeMap::new(),
            &BTreeMap::from([(kid.to_string(), spec)]),
            "strata",
            "history",
            Duration::ZERO,
        )
        .expect_err("a key configuration error")
    }

    /// Each start-up failure prints its cause once, in the words it had
    /// when it was a string.
    #[test]
    fn start_up_errors_print_each_cause_once() {
        let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let in_use_text = in_use.to_string();
        let bind = ServeError::Bind {
            listen: "127.0.0.1:50051".parse().expect("an address"),
            source: in_use,
        };
        assert_eq!(
            chain(&bind),
            format!("invalid configuration: api.listen 127.0.0.1:50051: {in_use_text}")
        );

        let missing = std::env::temp_dir().join(format!("strata-{}/k1.pem", uuid::Uuid::new_v4()));
        let missing_text = std::fs::read(&missing)
            .expect_err("no such file")
            .to_string();
        let read = ServeError::from(key_error("k1", format!("rsa:{}", missing.display())));
        assert_eq!(
            chain(&read),
            format!(
                r#"invalid configuration: api.jwt key "k1": read {}: {missing_text}"#,
                missing.display()
            )
        );

        let junk = std::env::temp_dir().join(format!("strata-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&junk, b"not a key").expect("write a scratch file");
        let parse_text = jsonwebtoken::DecodingKey::from_ec_pem(b"not a key")
            .expect_err("not a key")
            .to_string();
        let parse = ServeError::from(key_error("k2", format!("ec:{}", junk.display())));
        let _ = std::fs::remove_file(&junk);
        assert!(
            matches!(&parse, ServeError::Keys(KeyConfigError::Parse { .. })),
            "{parse:?}"
        );
        assert_eq!(
            chain(&parse),
            format!(
                r#"invalid configuration: api.jwt key "k2": parse {}: {parse_text}"#,
                junk.display()
            )
        );

        let short = page_token_keys(&["k=short".into()]).expect_err("a short secret");
        assert_eq!(
            chain(&short),
            r#"invalid configuration: api.page_token_keys: page token key "k" needs a secret of at least 32 bytes"#
        );

        let reflection = ServeError::Reflection(
            tonic_reflection::server::Error::InvalidFileDescriptorSet("no file".into()),
        );
        assert_eq!(
            chain(&reflection),
            "invalid configuration: reflection: invalid FileDescriptorSet - no file"
        );

        let connect = ServeError::Connect {
            url: "postgres://strata:***@db.example/hot".into(),
            error: PoolError::Connect {
                error: strata_pg::PgError::ConnectTimeout {
                    url: "db.example".into(),
                    timeout: Duration::from_secs(10),
                },
            },
        };
        assert_eq!(
            chain(&connect),
            "api database: database: connect to db.example: timed out after 10s (postgres://strata:***@db.example/hot)"
        );

        let cert = std::env::temp_dir().join(format!("strata-{}/cert.pem", uuid::Uuid::new_v4()));
        let cert_text = std::fs::read(&cert).expect_err("no such file").to_string();
        let tls = ServeError::Tls {
            path: cert.clone(),
            source: std::fs::read(&cert).expect_err("no such file"),
        };
        assert_eq!(
            chain(&tls),
            format!("tls: read {}: {cert_text}", cert.display())
        );

        let driver = "port=notaport"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port");
        let driver_text = driver.to_string();
        let not_migrated = ServeError::NotMigrated {
            role: "strata_api".into(),
            error: driver,
        };
        assert_eq!(
            chain(&not_migrated),
            format!(
                r#"api database: cannot read strata.api_audit as "strata_api": {driver_text} (run `strata migrate` first)"#
            )
        );
    }
}
