//! The debounced doorbell: wakes idle relays after a producer commits,
//! from a connection of its own, never inside a business transaction.
//!
//! `ring()` is a cheap, synchronous flag set. A background task sends
//! `NOTIFY strata_outbox` on the first ring (leading edge), then at most once
//! per `debounce` while rings keep coming (trailing edge), so at 10,000
//! commits/s it still sends only ~1/debounce notifications, each in its own
//! tiny transaction that no business commit waits for.
//!
//! With tokio-postgres it opens its session through `strata-pg`, so the
//! URL's TLS settings (`sslmode=verify-full&sslrootcert=...`), keepalives
//! and a connect timeout apply as for every Strata session; with sqlx it
//! sends through the application's own pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// `application_name` of the doorbell's own session.
#[cfg(feature = "tokio-postgres")]
const APPLICATION_NAME: &str = "strata-doorbell";
/// How long opening the doorbell's session may take.
#[cfg(feature = "tokio-postgres")]
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type SendFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Sender = Box<dyn FnMut() -> SendFuture + Send>;

#[derive(Debug, Default)]
struct Shared {
    pending: AtomicBool,
    sent: AtomicU64,
    failed: AtomicU64,
    wake: Notify,
}

/// Handle to ring the doorbell; clone freely.
#[derive(Debug, Clone)]
pub struct Doorbell {
    shared: Arc<Shared>,
}

impl Doorbell {
    /// Call after the business transaction committed.
    pub fn ring(&self) {
        if !self.shared.pending.swap(true, Ordering::AcqRel) {
            self.shared.wake.notify_one();
        }
    }

    /// Notifications sent so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Notifications that failed to send (relays' poll covers them).
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// A doorbell sending through a sqlx pool of the producer database.
    #[cfg(feature = "sqlx")]
    pub fn spawn_sqlx(pool: sqlx::PgPool, debounce: Duration, cancel: CancellationToken) -> Self {
        Self::spawn_with(
            Box::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    sqlx::query("SELECT pg_notify('strata_outbox', '')")
                        .execute(&pool)
                        .await
                        .map(|_| ())
                        .map_err(|err| err.to_string())
                })
            }),
            debounce,
            cancel,
        )
    }

    /// A doorbell with its own tokio-postgres connection to the producer
    /// database at `url` (never one inside a transaction), opened on first
    /// use and reopened after failures. `url` takes libpq's TLS parameters.
    #[cfg(feature = "tokio-postgres")]
    pub fn spawn_tokio_postgres(
        url: impl Into<strata_core::config::DatabaseUrl>,
        debounce: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let url = url.into();
        let client: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>> = Arc::default();
        Self::spawn_with(
            Box::new(move || {
                let (client, url) = (client.clone(), url.clone());
                Box::pin(async move {
                    let mut slot = client.lock().await;
                    if slot.as_ref().is_none_or(|c| c.is_closed()) {
                        let fresh = strata_pg::connect(&url, APPLICATION_NAME, CONNECT_TIMEOUT)
                            .await
                            .map_err(|err| err.to_string())?;
                        *slot = Some(fresh);
                    }
                    let Some(connected) = slot.as_ref() else {
                        return Err("no connection".to_string());
                    };
                    let result = connected.batch_execute("NOTIFY strata_outbox").await;
                    if result.is_err() {
                        *slot = None;
                    }
                    result.map_err(|err| err.to_string())
                })
            }),
            debounce,
            cancel,
        )
    }

    fn spawn_with(mut send: Sender, debounce: Duration, cancel: CancellationToken) -> Self {
        let shared = Arc::new(Shared::default());
        let task_shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = task_shared.wake.notified() => {}
                }
                // Drain rings: one NOTIFY covers every commit before it.
                while task_shared.pending.swap(false, Ordering::AcqRel) {
                    match tokio::time::timeout(Duration::from_secs(5), send()).await {
                        Ok(Ok(())) => {
                            task_shared.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(err)) => {
                            task_shared.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %err, "doorbell notify failed; relays will poll");
                        }
                        Err(_) => {
                            task_shared.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("doorbell notify timed out; relays will poll");
                        }
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(debounce) => {}
                    }
                }
            }
        });
        Self { shared }
    }
}
