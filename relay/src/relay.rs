//! Wiring of one relay process: start-up checks, then per source a
//! listener, the workers and a reconciler candidate, all stopped by one
//! cancellation token.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_core::config::{DatabaseUrl, HotStoreConfig, RelayConfig, SourceConfig};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connect::{
    connect, prepare_hot_session, prepare_source_session, WORKER_APPLICATION_NAME,
};
use crate::durability::check_hot_store;
use crate::error::RelayError;
use crate::hot_write::HotConn;
use crate::listener::{self, sleep_or_cancel};
use crate::metrics;
use crate::partition::PartitionCache;
use crate::reconcile::Candidate;
pub use crate::ship::ShipObserver;
use crate::ship::{AdaptiveLimit, ClaimFilter, Shipper, SourceConn};
use strata_core::backoff::Backoff;

/// Everything a relay process needs.
#[derive(Clone)]
pub struct RelayOptions {
    /// Tuning.
    pub relay: RelayConfig,
    /// The hot store (its URL must be set).
    pub hot_store: HotStoreConfig,
    /// Sources by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Name of this process in the reconciler status
    /// ([`strata_pg::holder_id`], `host:suffix:pid`, by default).
    pub holder: String,
    /// Whether this process stands for reconciler elections.
    pub reconcile: bool,
    /// Sees each batch's event ids at their hot commit.
    pub observer: Option<ShipObserver>,
}

impl RelayOptions {
    /// Options with the default holder name and reconciling on.
    pub fn new(
        relay: RelayConfig,
        hot_store: HotStoreConfig,
        sources: BTreeMap<String, SourceConfig>,
    ) -> Self {
        Self {
            relay,
            hot_store,
            sources,
            holder: default_holder(),
            reconcile: true,
            observer: None,
        }
    }
}

/// This process's name in the reconciler's election rows:
/// [`strata_pg::holder_id`] (`host:suffix:pid`).
pub(crate) fn default_holder() -> String {
    strata_pg::holder_id()
}

/// Runs the relay until `cancel` fires. Returns early only on a fatal
/// start-up error (unsafe durability, missing schema, bad URL).
pub async fn run(options: RelayOptions, cancel: CancellationToken) -> Result<(), RelayError> {
    let hot_url = options
        .hot_store
        .url
        .clone()
        .ok_or_else(|| RelayError::Config("`hot_store.url` is required".into()))?;
    let config = options.relay.clone();
    startup_checks(&options, &hot_url, &cancel).await?;

    let partitions = PartitionCache::default();
    let mut tasks = JoinSet::new();
    for (name, source) in &options.sources {
        let same_database = source.url == hot_url;
        let shipper = Shipper {
            source_name: name.clone(),
            limits: config.limits(),
            batch_bytes: config.batch_bytes,
            last_analyze: Default::default(),
            timeout: config.statement_timeout,
            partitions: partitions.clone(),
            observer: options.observer.clone(),
        };
        let (wake_tx, wake_rx) = watch::channel(0u64);
        tasks.spawn(listener::run(
            name.clone(),
            source.url.clone(),
            wake_tx,
            config.clone(),
            cancel.clone(),
        ));
        for index in 0..config.workers_per_source {
            let worker = Worker {
                index,
                shipper: shipper.clone(),
                source_url: source.url.clone(),
                hot_url: hot_url.clone(),
                same_database,
                config: config.clone(),
            };
            tasks.spawn(worker.run(wake_rx.clone(), cancel.clone()));
        }
        if options.reconcile {
            let candidate = Candidate {
                shipper: shipper.clone(),
                source_url: source.url.clone(),
                hot_url: hot_url.clone(),
                same_database,
                config: config.clone(),
                holder: options.holder.clone(),
            };
            tasks.spawn(candidate.run(cancel.clone()));
        }
        metrics::RECONCILER_LEADER.with_label_values(&[name]).set(0);
        tracing::info!(source = %name, same_database, workers = config.workers_per_source, "relaying source");
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(err) = result {
            if err.is_panic() {
                tracing::error!(error = %err, "relay task panicked");
                cancel.cancel();
            }
        }
    }
    tracing::info!("relay stopped");
    Ok(())
}

/// Waits for the hot store, then refuses unsafe durability and missing
/// schemas. Sources that are down are left to the workers' retries.
async fn startup_checks(
    options: &RelayOptions,
    hot_url: &DatabaseUrl,
    cancel: &CancellationToken,
) -> Result<(), RelayError> {
    let config = &options.relay;
    let timeout = config.statement_timeout;
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    loop {
        if cancel.is_cancelled() {
            return Err(RelayError::Cancelled);
        }
        let attempt = async {
            let hot = connect(hot_url, WORKER_APPLICATION_NAME, timeout).await?;
            check_hot_store(&hot, options.hot_store.allow_unsafe_durability, timeout).await?;
            strata_migrations::STORE.check(&hot).await?;
            Ok::<(), RelayError>(())
        };
        match attempt.await {
            Ok(()) => break,
            Err(err) if err.is_retryable() => {
                tracing::warn!(hot_store = %hot_url, error = %err, "hot store not reachable yet; retrying");
                sleep_or_cancel(backoff.next_delay(), cancel).await;
            }
            Err(err) => return Err(err),
        }
    }
    for (name, source) in &options.sources {
        match connect(&source.url, WORKER_APPLICATION_NAME, timeout).await {
            Ok(client) => strata_migrations::OUTBOX.check(&client).await?,
            Err(err) if err.is_retryable() => {
                tracing::warn!(source = %name, error = %err, "source not reachable at start-up; workers will retry");
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// One claim -> ship -> release loop.
struct Worker {
    index: usize,
    shipper: Shipper,
    source_url: DatabaseUrl,
    hot_url: DatabaseUrl,
    same_database: bool,
    config: RelayConfig,
}

impl Worker {
    async fn open(&self) -> Result<(SourceConn, HotConn), RelayError> {
        let timeout = self.config.statement_timeout;
        let app = WORKER_APPLICATION_NAME;
        let source = connect(&self.source_url, app, timeout).await?;
        prepare_source_session(&source, timeout, self.config.reconcile_after).await?;
        let source = SourceConn::new(source, self.same_database, timeout).await?;
        let hot = connect(&self.hot_url, app, timeout).await?;
        prepare_hot_session(&hot, timeout).await?;
        let hot = HotConn::new(hot, timeout).await?;
        Ok((source, hot))
    }

    async fn run(self, mut wake: watch::Receiver<u64>, cancel: CancellationToken) {
        let source = self.shipper.source_name.clone();
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut limit = AdaptiveLimit::new(self.config.batch_size);
        let mut conns: Option<(SourceConn, HotConn)> = None;
        while !cancel.is_cancelled() {
            let (source_conn, hot_conn) = match &mut conns {
                Some(pair) => pair,
                None => match self.open().await {
                    Ok(pair) => conns.insert(pair),
                    Err(err) => {
                        metrics::ERRORS
                            .with_label_values(&[&source, "connect"])
                            .inc();
                        tracing::warn!(source = %source, worker = self.index, error = %err, "relay worker cannot connect; retrying");
                        sleep_or_cancel(backoff.next_delay(), &cancel).await;
                        continue;
                    }
                },
            };
            // Mark notifications seen before claiming: one arriving during
            // the claim makes the wait below return at once.
            wake.borrow_and_update();
            // The batch in flight is finished (or fails) before shutdown is
            // honoured; every call in it is bounded by statement_timeout.
            let result = self
                .shipper
                .ship_batch(
                    source_conn,
                    hot_conn,
                    ClaimFilter::Any,
                    limit.rows(),
                    limit.isolating(),
                )
                .await;
            match result {
                Ok(outcome) => {
                    backoff.reset();
                    limit.succeeded();
                    if outcome.full {
                        continue;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        changed = tokio::time::timeout(self.config.poll_interval, wake.changed()) => {
                            if let Ok(Err(_)) = changed {
                                // Listener gone (shutting down): fall back to polling.
                                sleep_or_cancel(self.config.poll_interval, &cancel).await;
                            }
                        }
                    }
                }
                Err(RelayError::PartitionMissing) => {
                    tracing::info!(source = %source, "batch hit a missing day partition; creating it and retrying");
                    sleep_or_cancel(Duration::from_millis(10), &cancel).await;
                }
                Err(err) if err.is_row_rejection() => {
                    // Deterministic: the batch holds a row the hot store
                    // refuses. Halve at once until it is alone.
                    metrics::ERRORS.with_label_values(&[&source, "ship"]).inc();
                    limit.failed();
                    tracing::warn!(source = %source, worker = self.index, error = %err, next_batch_rows = limit.rows(), "the hot store refused a row of the batch; narrowing the batch");
                }
                Err(err) => {
                    metrics::ERRORS.with_label_values(&[&source, "ship"]).inc();
                    limit.failed();
                    tracing::warn!(source = %source, worker = self.index, error = %err, next_batch_rows = limit.rows(), "batch failed; retrying with a smaller batch");
                    if err.needs_reconnect() {
                        conns = None;
                    }
                    sleep_or_cancel(backoff.next_delay(), &cancel).await;
                }
            }
        }
        tracing::debug!(source = %source, worker = self.index, "relay worker stopped");
    }
}
