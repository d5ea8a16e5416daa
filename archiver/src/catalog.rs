//! The catalog in the hot store (`strata.archive_days`, `archive_files`,
//! `late_activity`) and the archiver lease. All SQL of the archiver that is
//! not the export itself lives here.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, GenericClient, Row};

use crate::error::ArchiveError;

/// Column `index` of `row` as a `T`; [`ArchiveError::Decode`] naming
/// `context` when the value does not decode (a NULL, an infinite
/// timestamp, ...) instead of the panic of `Row::get`.
pub(crate) fn column<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    context: &'static str,
) -> Result<T, ArchiveError> {
    row.try_get(index).map_err(ArchiveError::decode(context))
}

/// Runs `future` under `timeout`, naming `context` when it expires.
pub(crate) async fn bounded<T>(
    context: &str,
    timeout: Duration,
    future: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, ArchiveError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(ArchiveError::db(context)),
        Err(_) => Err(ArchiveError::Timeout {
            context: context.into(),
            seconds: timeout.as_secs_f64(),
        }),
    }
}

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
        client.query_opt(
            "INSERT INTO strata.archiver_lease (holder, epoch, acquired_at, expires_at)
             VALUES ($1, 1, now(), now() + make_interval(secs => $2))
             ON CONFLICT (singleton) DO UPDATE
                SET holder = EXCLUDED.holder,
                    epoch = strata.archiver_lease.epoch + 1,
                    acquired_at = now(),
                    expires_at = EXCLUDED.expires_at
              WHERE strata.archiver_lease.expires_at < now()
                 OR strata.archiver_lease.holder = EXCLUDED.holder
             RETURNING epoch",
            &[&holder, &ttl.as_secs_f64()],
        ),
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
        client.query_one(
            "SELECT holder, expires_at::text FROM strata.archiver_lease",
            &[],
        ),
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
            "UPDATE strata.archiver_lease SET expires_at = now() + make_interval(secs => $3)
              WHERE holder = $1 AND epoch = $2",
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
        client.execute(
            "UPDATE strata.archiver_lease SET expires_at = now()
              WHERE holder = $1 AND epoch = $2",
            &[&lease.holder, &lease.epoch],
        ),
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
        .query_opt(
            "SELECT 1 FROM strata.archiver_lease
              WHERE holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()
              FOR SHARE",
            &[&lease.holder, &lease.epoch],
        )
        .await
        .map_err(ArchiveError::db("check the archiver lease"))?;
    match row {
        Some(_) => Ok(()),
        None => Err(ArchiveError::Fenced { epoch: lease.epoch }),
    }
}

/// Where a day stands in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayStatus {
    /// The day.
    pub day: NaiveDate,
    /// `sealed` or `committed`.
    pub state: String,
    /// Export snapshot (committed days).
    pub export_snapshot: Option<String>,
    /// Committed rows, all files.
    pub rows: i64,
    /// Committed bytes.
    pub bytes: i64,
    /// Committed files.
    pub files: i32,
    /// Commits so far.
    pub version: i32,
    /// Commits reflected in the manifest object.
    pub manifest_version: i32,
    /// When its partition was dropped.
    pub partition_dropped_at: Option<DateTime<Utc>>,
}

const DAY_COLUMNS: &str = "day, state, export_snapshot::text, rows, bytes, files, version, \
                           manifest_version, partition_dropped_at";

fn status_from_row(row: &Row) -> Result<DayStatus, ArchiveError> {
    const CONTEXT: &str = "the archive catalog";
    Ok(DayStatus {
        day: column(row, 0, CONTEXT)?,
        state: column(row, 1, CONTEXT)?,
        export_snapshot: column(row, 2, CONTEXT)?,
        rows: column(row, 3, CONTEXT)?,
        bytes: column(row, 4, CONTEXT)?,
        files: column(row, 5, CONTEXT)?,
        version: column(row, 6, CONTEXT)?,
        manifest_version: column(row, 7, CONTEXT)?,
        partition_dropped_at: column(row, 8, CONTEXT)?,
    })
}

/// The catalog entry of `day`, if any.
pub async fn day_status(
    client: &impl GenericClient,
    day: NaiveDate,
) -> Result<Option<DayStatus>, ArchiveError> {
    let row = client
        .query_opt(
            &format!("SELECT {DAY_COLUMNS} FROM strata.archive_days WHERE day = $1"),
            &[&day],
        )
        .await
        .map_err(ArchiveError::db("read the archive catalog"))?;
    row.as_ref().map(status_from_row).transpose()
}

/// Every catalog entry.
pub async fn all_days(client: &Client) -> Result<Vec<DayStatus>, ArchiveError> {
    let rows = client
        .query(
            &format!("SELECT {DAY_COLUMNS} FROM strata.archive_days ORDER BY day"),
            &[],
        )
        .await
        .map_err(ArchiveError::db("read the archive catalog"))?;
    rows.iter().map(status_from_row).collect()
}

/// One committed file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommittedFile {
    /// Object key.
    pub key: String,
    /// `day` or `late`.
    pub origin: String,
    /// Order among the day's files.
    pub seq: i32,
    /// Rows.
    pub rows: i64,
    /// Size.
    pub bytes: i64,
    /// First user id.
    pub min_user_id: String,
    /// Last user id.
    pub max_user_id: String,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Content digest of the rows.
    pub content_sha256: String,
    /// Archiver epoch that committed it.
    pub epoch: i64,
}

/// The committed files of `day`, in order.
pub async fn day_files(
    client: &impl GenericClient,
    day: NaiveDate,
) -> Result<Vec<CommittedFile>, ArchiveError> {
    let rows = client
        .query(
            "SELECT object_key, origin, seq, rows, bytes, min_user_id, max_user_id,
                    sha256, content_sha256, epoch
               FROM strata.archive_files WHERE day = $1 ORDER BY seq",
            &[&day],
        )
        .await
        .map_err(ArchiveError::db("read the archive catalog"))?;
    const CONTEXT: &str = "the archive catalog's files";
    rows.iter()
        .map(|r| -> Result<CommittedFile, ArchiveError> {
            Ok(CommittedFile {
                key: column(r, 0, CONTEXT)?,
                origin: column(r, 1, CONTEXT)?,
                seq: column(r, 2, CONTEXT)?,
                rows: column(r, 3, CONTEXT)?,
                bytes: column(r, 4, CONTEXT)?,
                min_user_id: column(r, 5, CONTEXT)?,
                max_user_id: column(r, 6, CONTEXT)?,
                sha256: column(r, 7, CONTEXT)?,
                content_sha256: column(r, 8, CONTEXT)?,
                epoch: column(r, 9, CONTEXT)?,
            })
        })
        .collect()
}

/// Days that have a hot partition.
pub async fn partition_days(client: &Client) -> Result<Vec<NaiveDate>, ArchiveError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'strata.activity'::regclass",
            &[],
        )
        .await
        .map_err(ArchiveError::db("list hot partitions"))?;
    let mut days: Vec<NaiveDate> = Vec::new();
    for r in &rows {
        let name: &str = column(r, 0, "a hot partition's name")?;
        if let Some(day) = name
            .strip_prefix("activity_")
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
        {
            days.push(day);
        }
    }
    days.sort();
    Ok(days)
}

/// Days with captured rows still waiting for a late file.
pub async fn days_with_late_rows(client: &Client) -> Result<Vec<NaiveDate>, ArchiveError> {
    let rows = client
        .query(
            "SELECT DISTINCT l.day FROM strata.late_activity l
               JOIN strata.archive_days d ON d.day = l.day AND d.state = 'committed'
              WHERE NOT pg_visible_in_snapshot(l.xid, d.export_snapshot)
              ORDER BY 1",
            &[],
        )
        .await
        .map_err(ArchiveError::db("list late rows"))?;
    rows.iter()
        .map(|r| column::<NaiveDate>(r, 0, "the days with late rows"))
        .collect()
}

/// The database's clock (the one the lease and settle rules use).
pub async fn db_now(client: &Client) -> Result<DateTime<Utc>, ArchiveError> {
    let row = client
        .query_one("SELECT now()", &[])
        .await
        .map_err(ArchiveError::db("read the clock"))?;
    column(&row, 0, "the clock")
}
