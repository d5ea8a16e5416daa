//! The elected reconciler of a source.
//!
//! Election: `pg_try_advisory_lock` on a dedicated hot-store connection.
//! The lock lives exactly as long as that session, so a dead or partitioned
//! leader loses it when its connection goes, and every write the leader
//! makes to the hot store goes through that same connection: a leader that
//! lost the lock cannot write (the fencing Kleppmann asks for). Each term
//! bumps an epoch in `strata.reconciler_status`, and status updates are
//! conditional on it.
//!
//! While leading, every `reconcile_interval` it: checks it still leads,
//! creates the hot partitions from yesterday to `partitions_ahead_days`
//! ahead, re-ships rows older than `reconcile_after` (lost notifications,
//! crashed or paused peers), and records its status.

use chrono::Utc;
use strata_core::config::{DatabaseUrl, RelayConfig};
use tokio_util::sync::CancellationToken;

use crate::connect::{connect, prepare_hot_session, prepare_source_session};
use crate::error::{db, RelayError};
use crate::hot_write::HotConn;
use crate::listener::sleep_or_cancel;
use crate::metrics;
use crate::partition::ensure_day;
use crate::ship::{AdaptiveLimit, ClaimFilter, Shipper, SourceConn};
use strata_core::backoff::Backoff;

/// `application_name` of the election sessions.
pub const RECONCILER_APPLICATION_NAME: &str = "strata-relay-reconciler";

/// Advisory-lock key electing the reconciler of `source_name`.
pub fn election_key(source_name: &str) -> i64 {
    strata_pg::stable_key(&format!("strata.reconciler.{source_name}"))
}

pub(crate) struct Candidate {
    pub(crate) shipper: Shipper,
    pub(crate) source_url: DatabaseUrl,
    pub(crate) hot_url: DatabaseUrl,
    pub(crate) same_database: bool,
    pub(crate) config: RelayConfig,
    pub(crate) holder: String,
}

impl Candidate {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let source = self.shipper.source_name.clone();
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let timeout = self.config.statement_timeout;
        let key = election_key(&source);
        while !cancel.is_cancelled() {
            let client = match connect(&self.hot_url, RECONCILER_APPLICATION_NAME, timeout).await {
                Ok(client) => client,
                Err(err) => {
                    tracing::warn!(source = %source, error = %err, "connect for reconciler election; retrying");
                    sleep_or_cancel(backoff.next_delay(), &cancel).await;
                    continue;
                }
            };
            if let Err(err) = prepare_hot_session(&client, timeout).await {
                tracing::warn!(source = %source, error = %err, "configure election session; retrying");
                sleep_or_cancel(backoff.next_delay(), &cancel).await;
                continue;
            }
            backoff.reset();
            // Follower: try for the lock until we get it or the session fails.
            let won = loop {
                if cancel.is_cancelled() {
                    return;
                }
                match db(
                    "try reconciler lock",
                    timeout,
                    client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]),
                )
                .await
                {
                    Ok(row) if row.try_get::<_, bool>(0).unwrap_or(false) => break true,
                    Ok(_) => sleep_or_cancel(self.config.election_interval, &cancel).await,
                    Err(err) => {
                        tracing::warn!(source = %source, error = %err, "election session failed; reconnecting");
                        break false;
                    }
                }
            };
            if !won {
                sleep_or_cancel(backoff.next_delay(), &cancel).await;
                continue;
            }
            let hot = match HotConn::new(client, timeout).await {
                Ok(hot) => hot,
                Err(err) => {
                    tracing::warn!(source = %source, error = %err, "prepare reconciler session; retrying");
                    continue;
                }
            };
            let result = self.lead(hot, key, &cancel).await;
            metrics::RECONCILER_LEADER
                .with_label_values(&[&source])
                .set(0);
            match result {
                Ok(()) => return,
                Err(err) => {
                    metrics::ERRORS
                        .with_label_values(&[&source, "reconcile"])
                        .inc();
                    tracing::warn!(source = %source, error = %err, "stepped down as reconciler");
                    sleep_or_cancel(backoff.next_delay(), &cancel).await;
                }
            }
        }
    }

    /// Leads until cancelled (Ok) or until leadership is lost (Err).
    async fn lead(
        &self,
        mut hot: HotConn,
        key: i64,
        cancel: &CancellationToken,
    ) -> Result<(), RelayError> {
        let source = self.shipper.source_name.as_str();
        let timeout = self.config.statement_timeout;
        let row = db(
            "record reconciler term",
            timeout,
            hot.client.query_one(
                "WITH term AS (
                     INSERT INTO strata.reconciler_status
                         (source_name, epoch, holder, backend_pid, elected_at, heartbeat_at)
                     VALUES ($1, 1, $2, pg_backend_pid(), now(), now())
                     ON CONFLICT (source_name) DO UPDATE
                         SET epoch = strata.reconciler_status.epoch + 1,
                             holder = excluded.holder,
                             backend_pid = excluded.backend_pid,
                             elected_at = now(),
                             heartbeat_at = now()
                     RETURNING epoch)
                 INSERT INTO strata.reconciler_terms (source_name, epoch, holder, backend_pid)
                 SELECT $1, epoch, $2, pg_backend_pid() FROM term
                 RETURNING epoch",
                &[&source, &self.holder],
            ),
        )
        .await?;
        let epoch: i64 = row
            .try_get(0)
            .map_err(RelayError::row("record reconciler term"))?;
        metrics::RECONCILER_LEADER
            .with_label_values(&[source])
            .set(1);
        tracing::info!(source, epoch, holder = %self.holder, "elected reconciler");

        let mut source_conn: Option<SourceConn> = None;
        let mut limit = AdaptiveLimit::new(self.config.batch_size);
        loop {
            // Fencing check: our epoch is still current and this session holds it.
            let current = db(
                "reconciler heartbeat",
                timeout,
                hot.client.execute(
                    "UPDATE strata.reconciler_status SET heartbeat_at = now() \
                     WHERE source_name = $1 AND epoch = $2 AND backend_pid = pg_backend_pid()",
                    &[&source, &epoch],
                ),
            )
            .await?;
            if current != 1 {
                return Err(RelayError::Superseded { epoch });
            }
            let today = Utc::now().date_naive();
            for offset in -1..=i64::from(self.config.partitions_ahead_days) {
                let day = today + chrono::Duration::days(offset);
                ensure_day(&hot.client, day, timeout).await?;
            }
            let resent = match self
                .resend(&mut source_conn, &mut hot, &mut limit, cancel)
                .await
            {
                Ok(n) => n,
                Err(err) => {
                    // A source fault does not cost leadership; a hot-store
                    // fault shows at the next heartbeat.
                    source_conn = None;
                    metrics::ERRORS.with_label_values(&[source, "resend"]).inc();
                    tracing::warn!(source, error = %err, "reconciler resend failed; will retry");
                    0
                }
            };
            db(
                "record reconciler pass",
                timeout,
                hot.client.execute(
                    "UPDATE strata.reconciler_status \
                     SET last_pass_at = now(), resent_total = resent_total + $3 \
                     WHERE source_name = $1 AND epoch = $2",
                    &[&source, &epoch, &(resent as i64)],
                ),
            )
            .await?;
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = hot.client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
                    tracing::info!(source, epoch, "reconciler resigning on shutdown");
                    return Ok(());
                }
                _ = tokio::time::sleep(self.config.reconcile_interval) => {}
            }
        }
    }

    /// Re-ships every row older than `reconcile_after`; returns how many.
    async fn resend(
        &self,
        source_conn: &mut Option<SourceConn>,
        hot: &mut HotConn,
        limit: &mut AdaptiveLimit,
        cancel: &CancellationToken,
    ) -> Result<usize, RelayError> {
        let timeout = self.config.statement_timeout;
        let conn = match source_conn {
            Some(conn) => conn,
            None => {
                let client =
                    connect(&self.source_url, RECONCILER_APPLICATION_NAME, timeout).await?;
                prepare_source_session(&client, timeout, self.config.reconcile_after).await?;
                source_conn.insert(SourceConn::new(client, self.same_database, timeout).await?)
            }
        };
        let mut total = 0;
        loop {
            if cancel.is_cancelled() {
                return Ok(total);
            }
            let outcome = match self
                .shipper
                .ship_batch(
                    conn,
                    hot,
                    ClaimFilter::OlderThan(self.config.reconcile_after),
                    limit.rows(),
                    limit.isolating(),
                )
                .await
            {
                Ok(outcome) => {
                    limit.succeeded();
                    outcome
                }
                Err(RelayError::PartitionMissing) => continue,
                Err(err) => {
                    limit.failed();
                    return Err(err);
                }
            };
            total += outcome.claimed;
            metrics::RECONCILER_RESENT
                .with_label_values(&[&self.shipper.source_name])
                .inc_by(outcome.claimed as u64);
            if outcome.claimed > 0 {
                tracing::info!(source = %self.shipper.source_name, rows = outcome.claimed, "reconciler re-sent stuck rows");
            }
            if !outcome.full {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The election's advisory-lock keys, as they were when the key
    /// function lived in `strata-migrations`: a changed key would let
    /// relays of two versions reconcile one source at once.
    #[test]
    fn election_keys_are_pinned() {
        assert_eq!(election_key("main"), -95_868_085_007_059_901);
        assert_eq!(election_key("shop"), 123_631_363_715_179_142);
    }
}
