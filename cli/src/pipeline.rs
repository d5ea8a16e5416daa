//! `strata run`'s wiring: the relay, the archiver and the history API side
//! by side in one process, sharing one metrics endpoint; the first to fail
//! cancels the others. `strata demo` runs this same wiring on its own
//! databases (the binary hands it to `strata_workbench::demo::run`).

use std::net::SocketAddr;

use anyhow::Context;
use strata_core::Config;
use strata_relay::ShipObserver;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::{api, archive, metrics_server};

/// Runs until `cancel` or the first failure. `ship_observer` sees each
/// batch's event ids at its hot commit; `api_ready` receives the history
/// API's address once it listens (both for the demo; `strata run` passes
/// neither).
pub async fn run(
    config: &Config,
    ship_observer: Option<ShipObserver>,
    api_ready: Option<oneshot::Sender<SocketAddr>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let hot_store_url = config.hot_store_url()?.clone();
    if config.sources.is_empty() {
        anyhow::bail!("invalid configuration: `sources` is empty; add at least one [sources.<name>] with a url");
    }
    let api_options = api::options(config)?;
    let archiver_options = archive::options(config)?;
    let mut relay_options = strata_relay::RelayOptions::new(
        config.relay.clone(),
        config.hot_store.clone(),
        config.sources.clone(),
    );
    relay_options.observer = ship_observer;
    tracing::info!(hot_store = %hot_store_url, "starting relay, archiver and API in one process");
    let readiness = crate::readiness::Readiness::everything(config).await?;
    let metrics = metrics_server::spawn(&config.metrics, "run", readiness, cancel.clone()).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let (c1, c2, c3) = (cancel.clone(), cancel.clone(), cancel.clone());
    tasks.spawn(async move { strata_relay::run(relay_options, c1).await.context("relay") });
    let archiver_config = config.clone();
    tasks.spawn(async move {
        archive::check_object_store(&archiver_config, &c2).await?;
        strata_archiver::run(archiver_options, c2)
            .await
            .context("archiver")
    });
    tasks.spawn(async move {
        strata_api::serve(api_options, c3, api_ready)
            .await
            .context("history API")
    });
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("task panicked").and_then(|r| r);
        if let Err(err) = result {
            tracing::error!("{err:#}");
            first_error.get_or_insert(err);
        }
        // Whichever ends first (error or shutdown), the others follow.
        cancel.cancel();
    }
    if let Some(handle) = metrics {
        let _ = handle.await;
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}
