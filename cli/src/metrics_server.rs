//! `GET /metrics` (Prometheus text) and `GET /healthz` on `metrics.listen`.

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use strata_core::config::MetricsConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Binds and serves until `cancel`; `None` when disabled.
pub async fn spawn(
    config: &MetricsConfig,
    cancel: CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(addr) = config.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind metrics endpoint {addr} (metrics.listen)"))?;
    tracing::info!(%addr, "serving /metrics");
    let app = Router::new()
        .route(
            "/metrics",
            get(|| async { strata_core::telemetry::render_metrics() }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    Ok(Some(tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %err, "metrics endpoint stopped");
        }
    })))
}
