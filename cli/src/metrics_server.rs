//! `GET /metrics` (Prometheus text), `GET /healthz` (liveness: the
//! process serves) and `GET /readyz` (readiness: the parts its role
//! depends on answer, see [`Readiness`]) on `metrics.listen`.

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use strata_core::config::MetricsConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

/// Binds and serves until `cancel`; `None` when disabled. `role` labels
/// `strata_build_info`.
pub async fn spawn(
    config: &MetricsConfig,
    role: &str,
    readiness: Readiness,
    cancel: CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    strata_core::telemetry::register_build_info(role);
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
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let (ready, report) = readiness.report().await;
                    let status = if ready {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, report)
                }
            }),
        );
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
