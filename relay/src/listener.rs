//! LISTEN on a source: turns notifications into worker wake-ups, and
//! samples the age of the oldest unshipped row. Reconnects with backoff;
//! after every (re)connect it wakes the workers once, since notifications
//! sent while disconnected are lost.

use std::time::Duration;

use futures_util::StreamExt;
use strata_core::config::{DatabaseUrl, RelayConfig};
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::connect::connect_raw;
use crate::error::db;
use crate::metrics;
use strata_core::backoff::Backoff;

/// `application_name` of listener sessions (tests terminate them).
pub const LISTENER_APPLICATION_NAME: &str = "strata-relay-listener";

/// Producers may set `enqueued_at` to anything, `infinity` included: rows
/// with an infinite one are passed over (they would fail the sample, or
/// hide the lag of the rows behind them).
const OLDEST_SQL: &str =
    "SELECT coalesce((SELECT extract(epoch FROM clock_timestamp() - enqueued_at)::float8 \
     FROM strata_outbox.events WHERE isfinite(enqueued_at) ORDER BY id LIMIT 1), 0)";

pub(crate) async fn run(
    source_name: String,
    url: DatabaseUrl,
    wake: watch::Sender<u64>,
    config: RelayConfig,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let timeout = config.statement_timeout;
    let bump = |wake: &watch::Sender<u64>| wake.send_modify(|n| *n = n.wrapping_add(1));
    while !cancel.is_cancelled() {
        let (client, mut connection) = match connect_raw(&url, LISTENER_APPLICATION_NAME, timeout)
            .await
        {
            Ok(pair) => pair,
            Err(err) => {
                metrics::ERRORS
                    .with_label_values(&[&source_name, "listen"])
                    .inc();
                tracing::warn!(source = %source_name, error = %err, "connect listener; retrying");
                sleep_or_cancel(backoff.next_delay(), &cancel).await;
                continue;
            }
        };
        let (notified_tx, mut notified_rx) = mpsc::unbounded_channel::<()>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if notified_tx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::debug!(error = %err, "listener connection ended");
                        break;
                    }
                }
            }
        });
        if let Err(err) = db(
            "listen",
            timeout,
            client.batch_execute("LISTEN strata_outbox"),
        )
        .await
        {
            metrics::ERRORS
                .with_label_values(&[&source_name, "listen"])
                .inc();
            tracing::warn!(source = %source_name, error = %err, "LISTEN failed; retrying");
            driver.abort();
            sleep_or_cancel(backoff.next_delay(), &cancel).await;
            continue;
        }
        tracing::debug!(source = %source_name, "listening for outbox notifications");
        backoff.reset();
        // Anything committed while we were not listening.
        bump(&wake);
        let mut lag_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    driver.abort();
                    return;
                }
                message = notified_rx.recv() => {
                    if message.is_none() {
                        metrics::ERRORS.with_label_values(&[&source_name, "listen"]).inc();
                        tracing::warn!(source = %source_name, "listener connection lost; reconnecting");
                        break;
                    }
                    metrics::NOTIFICATIONS.with_label_values(&[&source_name]).inc();
                    // Coalesce a burst into one wake-up.
                    while notified_rx.try_recv().is_ok() {
                        metrics::NOTIFICATIONS.with_label_values(&[&source_name]).inc();
                    }
                    bump(&wake);
                }
                _ = lag_tick.tick() => {
                    match db("sample outbox lag", timeout, client.query_one(OLDEST_SQL, &[])).await {
                        Ok(row) => {
                            let age: f64 = row.try_get(0).unwrap_or(0.0);
                            metrics::OLDEST_UNSHIPPED_SECONDS.with_label_values(&[&source_name]).set(age);
                        }
                        Err(err) => {
                            tracing::warn!(source = %source_name, error = %err, "listener connection failed; reconnecting");
                            break;
                        }
                    }
                }
            }
        }
        driver.abort();
    }
}

/// Sleeps, returning early on cancellation.
pub(crate) async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
