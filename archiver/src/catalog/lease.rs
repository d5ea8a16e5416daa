//! The archiver lease (`strata.archiver_lease`, one row): taking it,
//! renewing it, giving it up, and the fence every commit passes.

use std::time::Duration;

use tokio_postgres::{Client, GenericClient};

use crate::error::ArchiveError;
use crate::pg::{bounded, column};

/// Takes the lease if it is free, expired, or already this holder's; a new
/// term (epoch) each time. No row when another holder's lease is live.
const ACQUIRE_SQL: &str =
    "INSERT INTO strata.archiver_lease (holder, epoch, acquired_at, expires_at)
     VALUES ($1, 1, now(), now() + make_interval(secs => $2))
     ON CONFLICT (singleton) DO UPDATE
        SET holder = EXCLUDED.holder,
            epoch = strata.archiver_lease.epoch + 1,
            acquired_at = now(),
            expires_at = EXCLUDED.expires_at
      WHERE strata.archiver_lease.expires_at < now()
         OR strata.archiver_lease.holder = EXCLUDED.holder
     RETURNING epoch";

const HOLDER_SQL: &str = "SELECT holder, expires_at::text FROM strata.archiver_lease";

const RENEW_SQL: &str =
    "UPDATE strata.archiver_lease SET expires_at = now() + make_interval(secs => $3)
      WHERE holder = $1 AND epoch = $2";

const RELEASE_SQL: &str = "UPDATE strata.archiver_lease SET expires_at = now()
      WHERE holder = $1 AND epoch = $2";

/// A row while the lease is this term's and live; `FOR SHARE` keeps it so
/// until the transaction ends (a takeover's update waits for it).
const FENCE_SQL: &str = "SELECT 1 FROM strata.archiver_lease
      WHERE holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()
      FOR SHARE";

/// The lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// This process's holder id.
    pub holder: String,
    /// The epoch it won; commits are fenced on it.
    pub epoch: i64,
}

/// Takes the lease if it is free, expired, or already ours; otherwise says
/// who holds it.
pub async fn acquire_lease(
    client: &Client,
    holder: &str,
    ttl: Duration,
    timeout: Duration,
) -> Result<Lease, ArchiveError> {
    let row = bounded(
        "acquire the archiver lease",
        timeout,
        client.query_opt(ACQUIRE_SQL, &[&holder, &ttl.as_secs_f64()]),
    )
    .await?;
    if let Some(row) = row {
        return Ok(Lease {
            holder: holder.to_string(),
            epoch: column(&row, 0, "the archiver lease")?,
        });
    }
    let row = bounded(
        "read the archiver lease",
        timeout,
        client.query_one(HOLDER_SQL, &[]),
    )
    .await?;
    Err(ArchiveError::LeaseHeld {
        holder: column(&row, 0, "the archiver lease")?,
        until: column(&row, 1, "the archiver lease")?,
    })
}

/// Extends the lease; [`ArchiveError::Fenced`] when another archiver took it.
pub async fn renew_lease(
    client: &Client,
    lease: &Lease,
    ttl: Duration,
    timeout: Duration,
) -> Result<(), ArchiveError> {
    let updated = bounded(
        "renew the archiver lease",
        timeout,
        client.execute(
            RENEW_SQL,
            &[&lease.holder, &lease.epoch, &ttl.as_secs_f64()],
        ),
    )
    .await?;
    if updated == 1 {
        Ok(())
    } else {
        Err(ArchiveError::Fenced { epoch: lease.epoch })
    }
}

/// Gives the lease up so another archiver need not wait for it to expire.
pub async fn release_lease(client: &Client, lease: &Lease, timeout: Duration) {
    let result = bounded(
        "release the archiver lease",
        timeout,
        client.execute(RELEASE_SQL, &[&lease.holder, &lease.epoch]),
    )
    .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "could not release the archiver lease; it will expire");
    }
}

/// Fails unless `lease` is still current; inside a transaction, holds a
/// lock that keeps it current until the transaction ends.
pub(crate) async fn fence<C: GenericClient>(tx: &C, lease: &Lease) -> Result<(), ArchiveError> {
    let row = tx
        .query_opt(FENCE_SQL, &[&lease.holder, &lease.epoch])
        .await
        .map_err(ArchiveError::db("check the archiver lease"))?;
    match row {
        Some(_) => Ok(()),
        None => Err(ArchiveError::Fenced { epoch: lease.epoch }),
    }
}
