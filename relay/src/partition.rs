//! Day partitions of `strata.activity`: a per-process cache of days known to
//! have a partition, and creation through `strata.ensure_day_partition`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::Client;

use crate::error::{db, RelayError};

/// Days known to have a partition. A day can lose its partition (dropped
/// after archiving); inserts then fail and [`PartitionCache::forget`] is
/// called before retrying.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionCache {
    days: Arc<Mutex<HashSet<NaiveDate>>>,
}

impl PartitionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<NaiveDate>> {
        // A poisoned set of dates is still a valid set of dates.
        self.days.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure every day of `times` has a partition.
    pub(crate) async fn ensure_for(
        &self,
        hot: &Client,
        times: &[DateTime<Utc>],
        timeout: Duration,
    ) -> Result<(), RelayError> {
        let mut missing: Vec<NaiveDate> = {
            let known = self.lock();
            times
                .iter()
                .map(|t| t.date_naive())
                .filter(|d| !known.contains(d))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        for day in missing {
            ensure_day(hot, day, timeout).await?;
            self.lock().insert(day);
        }
        Ok(())
    }

    /// Forgets every day of `times` (their partitions may have been dropped).
    pub(crate) fn forget(&self, times: &[DateTime<Utc>]) {
        let mut known = self.lock();
        for t in times {
            known.remove(&t.date_naive());
        }
    }
}

/// Creates the partition of `day` if missing; true when it created it.
pub(crate) async fn ensure_day(
    hot: &Client,
    day: NaiveDate,
    timeout: Duration,
) -> Result<bool, RelayError> {
    let row = db(
        "create day partition",
        timeout,
        hot.query_one("SELECT strata.ensure_day_partition($1)", &[&day]),
    )
    .await?;
    let created: bool = row
        .try_get(0)
        .map_err(RelayError::row("create day partition"))?;
    if created {
        tracing::info!(%day, "created hot partition");
    }
    Ok(created)
}
